"""Tracking by box overlap and the K-of-N vote, on descriptors of real faces."""

import cv2
import numpy as np
import pytest

from edge.detect import Box
from edge.match import AMBIGUOUS, MATCH, UNKNOWN, Gallery, match
from edge.track import Track, Tracker

THRESHOLD = 0.45
MARGIN = 0.05


def _views(detector, describer, image, scales=(1.0, 0.85, 0.7)):
    """Descriptors of the same real face at a few sizes, as a camera would see it."""
    out = []
    for s in scales:
        img = cv2.resize(image, (int(image.shape[1] * s), int(image.shape[0] * s)), interpolation=cv2.INTER_AREA)
        boxes = detector.detect(img)[:1]
        out.append(describer.describe(img, boxes)[0])
    return out


@pytest.fixture(scope="module")
def faces(detector, describer, astronaut, grace_hopper):
    return {
        "eileen": _views(detector, describer, astronaut[0:300, 90:350]),
        "grace": _views(detector, describer, grace_hopper),
    }


@pytest.fixture(scope="module")
def both(faces):
    return Gallery.from_people({"eileen_collins": faces["eileen"][:1], "grace_hopper": faces["grace"][:1]})


@pytest.fixture(scope="module")
def eileen_only(faces):
    return Gallery.from_people({"eileen_collins": faces["eileen"][:1]})


def _results(descriptors, gallery, **kw):
    kw.setdefault("threshold", THRESHOLD)
    kw.setdefault("margin", MARGIN)
    return match(np.asarray(descriptors), gallery, **kw)


def _track(k=3, n=5, retry=0.0):
    return Track(1, Box(100, 100, 200, 200), 10.0, votes_needed=k, window_frames=n, retry_seconds=retry)


def test_real_views_of_an_enrolled_face_match_and_others_do_not(faces, both, eileen_only):
    assert {r.status for r in _results(faces["eileen"], both)} == {MATCH}
    assert {r.status for r in _results(faces["grace"], eileen_only)} == {UNKNOWN}


def test_grant_waits_for_k_matching_frames(faces, both):
    track = _track(k=3, n=5)
    results = _results(faces["eileen"], both)
    assert track.vote(results[0], 10.0) is None
    assert track.vote(results[1], 10.1) is None
    decision = track.vote(results[2], 10.2)
    assert decision.decision == "granted"
    assert decision.person == "eileen_collins"
    assert decision.frames_used == 3


def test_grant_reports_median_distance_of_agreeing_frames_and_time_to_decide(faces, both):
    track = _track(k=3, n=5)
    results = _results(faces["eileen"], both)
    decision = None
    for i, r in enumerate(results):
        decision = track.vote(r, 10.0 + 0.25 * i)
    assert decision.distance == pytest.approx(float(np.median([r.distance for r in results])))
    assert decision.decide_ms == pytest.approx(500.0)
    assert decision.t == pytest.approx(10.5)


def test_votes_for_different_people_are_not_pooled(faces, both):
    track = _track(k=3, n=5)
    e = _results(faces["eileen"], both)
    g = _results(faces["grace"], both)
    for r in (e[0], g[0], e[1], g[1]):
        assert track.vote(r, 10.0) is None
    decision = track.vote(e[2], 10.5)
    assert (decision.decision, decision.person) == ("granted", "eileen_collins")


def test_matches_older_than_the_window_do_not_count(faces, both, eileen_only):
    track = _track(k=3, n=5)
    e = _results(faces["eileen"], both)
    stranger = _results(faces["grace"], eileen_only)
    sequence = [e[0], e[1], stranger[0], stranger[1], stranger[2], e[2]]
    # The first match has left the 5-frame window when the third arrives.
    assert [track.vote(r, 10.0) for r in sequence] == [None] * 6


def test_unknown_only_after_n_frames_without_a_match(faces, eileen_only):
    track = _track(k=3, n=5)
    stranger = _results(faces["grace"], eileen_only)
    for i in range(4):
        assert track.vote(stranger[i % 3], 10.0 + i) is None
    decision = track.vote(stranger[0], 14.0)
    assert decision.decision == "unknown"
    assert decision.person is None
    assert decision.frames_used == 5


def test_a_match_restarts_the_count_towards_unknown(faces, both, eileen_only):
    track = _track(k=3, n=5)
    stranger = _results(faces["grace"], eileen_only)
    e = _results(faces["eileen"], both)
    for r in [stranger[0]] * 4 + [e[0]] + [stranger[1]] * 4:
        assert track.vote(r, 10.0) is None
    assert track.vote(stranger[2], 11.0).decision == "unknown"


def test_ambiguous_frames_do_not_count_for_anyone(faces, both):
    track = _track(k=3, n=5)
    clear = _results(faces["eileen"], both)
    # A margin wider than the gap between the two people makes every frame ambiguous.
    unclear = _results(faces["eileen"], both, threshold=0.9, margin=0.9)
    assert {r.status for r in unclear} == {AMBIGUOUS}
    assert track.vote(clear[0], 10.0) is None
    assert track.vote(unclear[0], 10.1) is None
    assert track.vote(unclear[1], 10.2) is None
    assert track.vote(clear[1], 10.3) is None
    decision = track.vote(clear[2], 10.4)
    assert decision.decision == "granted"
    assert decision.frames_used == 5


def test_mostly_ambiguous_frames_end_in_an_ambiguous_decision(faces, both):
    track = _track(k=3, n=5)
    unclear = _results(faces["eileen"], both, threshold=0.9, margin=0.9)
    decisions = [track.vote(unclear[i % 3], 10.0 + i) for i in range(5)]
    assert decisions[:4] == [None] * 4
    assert decisions[4].decision == "ambiguous"
    assert decisions[4].person is None
    assert decisions[4].nearest == "eileen_collins"


def test_a_decided_track_refuses_another_vote(faces, both):
    track = _track(k=1, n=1)
    r = _results(faces["eileen"], both)
    assert track.vote(r[0], 10.0).decision == "granted"
    assert not track.wants_descriptor(11.0)
    with pytest.raises(ValueError):
        track.vote(r[1], 11.0)


def test_unknown_track_gets_a_fresh_vote_after_retry_seconds(faces, both, eileen_only):
    track = _track(k=2, n=2, retry=1.0)
    stranger = _results(faces["grace"], eileen_only)
    assert track.vote(stranger[0], 10.0) is None
    assert track.vote(stranger[1], 10.1).decision == "unknown"
    assert not track.wants_descriptor(10.5)
    assert track.wants_descriptor(11.1)
    # Now enrolled (the gallery changed): the fresh vote grants.
    g = _results(faces["grace"], both)
    assert track.vote(g[0], 11.1) is None
    decision = track.vote(g[1], 11.2)
    assert (decision.decision, decision.person) == ("granted", "grace_hopper")
    assert decision.decide_ms == pytest.approx(1200.0)
    assert not track.wants_descriptor(13.0)
    assert track.wants_descriptor(13.3)  # only the periodic identity check


def test_retry_backs_off_and_repeats_no_unknown(faces, eileen_only):
    track = _track(k=1, n=1, retry=1.0)
    stranger = _results(faces["grace"], eileen_only)
    assert track.vote(stranger[0], 10.0).decision == "unknown"
    assert track.vote(stranger[1], 11.0) is None  # still unknown: not reported again
    assert not track.wants_descriptor(12.5)
    assert track.wants_descriptor(13.0)  # second wait is twice the first


def test_retry_zero_makes_unknown_final(faces, eileen_only):
    track = _track(k=1, n=1, retry=0.0)
    stranger = _results(faces["grace"], eileen_only)
    assert track.vote(stranger[0], 10.0, descriptor=faces["grace"][0]).decision == "unknown"
    assert not track.wants_descriptor(11.0)
    # The identity check finds the same face: no new vote, no new decision.
    assert track.wants_descriptor(1000.0)
    assert track.vote(stranger[1], 1000.0, descriptor=faces["grace"][1]) is None
    assert track.decision.decision == "unknown" and not track.wants_descriptor(1001.0)


def test_overlapping_box_continues_the_same_track():
    tracker = Tracker(iou=0.3, timeout_seconds=2.0)
    first = tracker.update([Box(100, 100, 200, 200)], 0.0)[0]
    second = tracker.update([Box(110, 105, 210, 205)], 0.1)[0]
    assert second is first
    assert first.frames_seen == 2
    assert first.box == Box(110, 105, 210, 205)


def test_distant_box_starts_a_new_track():
    tracker = Tracker(iou=0.3, timeout_seconds=2.0)
    first = tracker.update([Box(100, 100, 200, 200)], 0.0)[0]
    other = tracker.update([Box(400, 100, 500, 200)], 0.1)[0]
    assert other is not first
    assert other.track_id != first.track_id


def test_two_faces_in_one_frame_keep_their_own_tracks():
    tracker = Tracker(iou=0.3, timeout_seconds=2.0)
    a, b = tracker.update([Box(100, 100, 200, 200), Box(300, 100, 400, 200)], 0.0)
    b2, a2 = tracker.update([Box(305, 100, 405, 200), Box(95, 100, 195, 200)], 0.1)
    assert (a2, b2) == (a, b)


def test_face_walking_onto_a_recent_spot_keeps_its_own_track():
    tracker = Tracker(iou=0.3, timeout_seconds=2.0)
    earlier = tracker.update([Box(200, 100, 350, 250)], 0.0)[0]
    # The first face has left; a second one walks in from the right...
    walking = [tracker.update([Box(left, 100, left + 150, 250)], t)[0]
               for left, t in ((400, 1.0), (340, 1.1), (280, 1.2), (220, 1.3))]
    # ...and stays itself even where it overlaps the first face's last box more.
    assert walking[0] is not earlier
    assert all(track is walking[0] for track in walking)


def test_track_is_dropped_after_the_timeout():
    tracker = Tracker(iou=0.3, timeout_seconds=2.0)
    first = tracker.update([Box(100, 100, 200, 200)], 0.0)[0]
    assert tracker.update([], 1.9) == []
    assert tracker.open_tracks == [first]
    again = tracker.update([Box(100, 100, 200, 200)], 4.5)[0]
    assert again is not first
    assert tracker.open_tracks == [again]


def test_k_larger_than_n_is_refused():
    with pytest.raises(ValueError):
        Tracker(votes_needed=6, window_frames=5)


# -- one track, one face -------------------------------------------------------------------


def test_votes_of_two_faces_in_one_track_never_add_up(faces, both):
    # Eileen's face gave two votes; then a stranger's face takes the box and
    # one of its frames happens to match Eileen: that must not grant.
    track = _track(k=3, n=5)
    eileen = _results(faces["eileen"], both)
    assert track.vote(eileen[0], 10.0, descriptor=faces["eileen"][0]) is None
    assert track.vote(eileen[1], 10.1, descriptor=faces["eileen"][1]) is None
    assert track.vote(eileen[2], 10.2, descriptor=faces["grace"][0]) is None
    # From now on only the new face's own frames count.
    assert track.vote(eileen[0], 10.3, descriptor=faces["grace"][1]) is None
    assert track.vote(eileen[1], 10.4, descriptor=faces["grace"][2]).frames_used == 5


def tracked_grant(faces, both):
    tracker = Tracker(iou=0.3, timeout_seconds=2.0, votes_needed=2, window_frames=3)
    box = Box(100, 100, 200, 200)
    eileen = _results(faces["eileen"], both)
    for i in range(2):
        track = tracker.update([box], 10.0 + i * 0.1)[0]
        decision = track.vote(eileen[i], 10.0 + i * 0.1, descriptor=faces["eileen"][i])
    assert decision.granted
    return tracker, track, box


def test_a_stranger_in_the_granted_persons_spot_gets_a_track_and_decision_of_their_own(faces, both, eileen_only):
    tracker, granted, box = tracked_grant(faces, both)
    assert not granted.wants_descriptor(10.2)
    tracker.update([], 10.3)  # the granted face is lost for a frame ...
    again = tracker.update([box], 10.4)[0]  # ... and a box appears in the same spot
    assert again is granted and again.wants_descriptor(10.4)
    stranger = _results(faces["grace"], eileen_only)
    assert again.vote(stranger[0], 10.4, descriptor=faces["grace"][0]) is None
    assert again.track_id != 1 and again.decision is None
    decision = None
    for i, t in ((1, 10.5), (2, 10.6)):
        decision = again.vote(stranger[i], t, descriptor=faces["grace"][i])
    assert decision.decision == "unknown" and decision.track_id == again.track_id
    assert decision.decide_ms == pytest.approx(200.0)


def test_the_same_face_picked_up_again_keeps_its_grant(faces, both):
    tracker, granted, box = tracked_grant(faces, both)
    tracker.update([], 10.3)
    again = tracker.update([box], 10.4)[0]
    assert again.vote(_results(faces["eileen"], both)[2], 10.4, descriptor=faces["eileen"][2]) is None
    assert again.granted and again.track_id == 1 and not again.wants_descriptor(10.5)


def test_a_granted_face_that_stays_in_view_is_checked_every_few_seconds(faces, both, eileen_only):
    tracker, granted, box = tracked_grant(faces, both)
    t = 10.2
    while not granted.wants_descriptor(t):
        assert tracker.update([box], t)[0] is granted
        t = round(t + 0.1, 1)
    assert t == pytest.approx(10.1 + 2.0, abs=0.11)
    # Someone else has taken the box without a missed frame: found at the check.
    granted.vote(_results(faces["grace"], eileen_only)[0], t, descriptor=faces["grace"][0])
    assert granted.decision is None and granted.track_id != 1
