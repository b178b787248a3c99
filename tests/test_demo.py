"""``bytelocker demo``: the sample scene grants the two enrolled people and no one else."""

import itertools

import numpy as np
import pytest

from bytelocker.cli import main
from edge.demo import demo_scene, enrolment_detector, run_demo, sample_people, scene_plan


@pytest.fixture(scope="module")
def demo():
    return run_demo()


def test_demo_grants_both_enrolled_people(demo):
    assert demo.granted() == {"eileen_collins", "grace_hopper"}


def test_demo_grants_each_person_once_and_while_they_are_in_view(demo):
    grants = [d for d in demo.decisions if d.decision == "granted"]
    assert len(grants) == 2
    for decision in grants:
        [segment] = [s for s in demo.plan if s.sample is not None and s.sample.person_id == decision.person]
        assert segment.start <= decision.t < segment.end


def test_demo_stranger_is_seen_and_not_granted(demo):
    [segment] = [s for s in demo.plan if s.sample is not None and s.sample.person_id is None]
    during = [d for d in demo.decisions if segment.start <= d.t < segment.end]
    assert during, "the stranger was never decided on"
    assert {d.decision for d in during} <= {"unknown", "ambiguous"}


def test_demo_skips_detection_on_the_bare_wall(demo):
    assert demo.stats["frames_skipped"] > 0


def test_demo_scene_is_the_same_every_time():
    people = sample_people()
    detector = enrolment_detector()
    plan = scene_plan(people)
    first = [f for f, _ in itertools.islice(demo_scene(people, detector, plan=plan), 0, 40, 10)]
    again = [f for f, _ in itertools.islice(demo_scene(people, detector, plan=plan), 0, 40, 10)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.mark.slow
def test_bytelocker_demo_loop_only_prints_the_grants(capsys):
    assert main(["demo", "--loop-only"]) == 0
    out = capsys.readouterr().out
    assert "Granted: eileen_collins, grace_hopper." in out
