"""Grouping unidentified faces into stranger clusters, on real photos."""

import os

import cv2
import numpy as np
import pytest

from central import db
from central.clusters import StrangerCluster, StrangerClusters
from edge.images import load_rgb


@pytest.fixture
def central_db(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path / 'central.db'}")
    yield database
    database.close()


@pytest.fixture(scope="module")
def clusterer_engine():
    from edge.describe import FaceDescriber
    from edge.detect import FaceDetector

    return FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=20), FaceDescriber()


def snapshot(rgb, detector, grow=0.3):
    """A door-like face crop: the detected face with a margin."""
    box = detector.detect(rgb)[0]
    mx, my = int(box.width * grow), int(box.height * grow)
    h, w = rgb.shape[:2]
    return np.ascontiguousarray(rgb[max(0, box.top - my):min(h, box.bottom + my),
                                    max(0, box.left - mx):min(w, box.right + mx)])


def test_same_stranger_at_two_doors_is_one_visitor(central_db, clusterer_engine, astronaut, grace_hopper):
    detector, describer = clusterer_engine
    clusters = StrangerClusters(describer=describer, detector=detector)
    darker = np.clip(astronaut.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    smaller = cv2.resize(astronaut, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    a = clusters.assign(clusters.describe_snapshot(snapshot(astronaut, detector)), event_id="e1", door_id="front")
    b = clusters.assign(clusters.describe_snapshot(snapshot(darker, detector)), event_id="e2", door_id="back")
    c = clusters.assign(clusters.describe_snapshot(snapshot(smaller, detector)), event_id="e3", door_id="front")
    g = clusters.assign(clusters.describe_snapshot(snapshot(grace_hopper, detector)), event_id="e4", door_id="front")
    assert a.id == b.id == c.id
    assert g.id != a.id
    visitor = StrangerCluster.get_by_id(a.id)
    assert visitor.sightings == 3 and visitor.doors == ["back", "front"]
    assert visitor.label == f"unknown visitor #{a.id}: 3 sightings at 2 doors"


def test_a_snapshot_without_a_face_gives_no_descriptor(central_db, clusterer_engine):
    detector, describer = clusterer_engine
    clusters = StrangerClusters(describer=describer, detector=detector)
    assert clusters.describe_snapshot(np.full((30, 30, 3), 128, np.uint8)) is None


def test_forgetting_a_cluster_removes_its_sightings(central_db, clusterer_engine, astronaut):
    detector, describer = clusterer_engine
    clusters = StrangerClusters(describer=describer, detector=detector)
    visitor = clusters.assign(clusters.describe_snapshot(snapshot(astronaut, detector)), event_id="e1",
                              door_id="front", snapshot_path="/snaps/e1.jpg")
    assert clusters.forget_cluster(visitor.id) == ["/snaps/e1.jpg"]
    assert StrangerCluster.select().count() == 0
    again = clusters.assign(clusters.describe_snapshot(snapshot(astronaut, detector)), event_id="e2",
                            door_id="front")
    assert again.sightings == 1


@pytest.mark.slow
def test_lfw_strangers_group_by_person_and_stay_apart(central_db, clusterer_engine, shared_data):
    detector, describer = clusterer_engine
    clusters = StrangerClusters(describer=describer, detector=detector)
    names = ["Colin_Powell", "Gloria_Macapagal_Arroyo", "Hugo_Chavez", "Jean_Chretien"]
    assigned = {}
    for name in names:
        folder = shared_data / "lfw-dev" / name
        for i, fname in enumerate(sorted(os.listdir(folder))[:5]):
            rgb = load_rgb(str(folder / fname))
            descriptor = clusters.describe_snapshot(snapshot(rgb, detector, grow=0.2))
            visitor = clusters.assign(descriptor, event_id=f"{name}-{i}", door_id="d1")
            assigned.setdefault(name, []).append(visitor.id)
    # Each stranger mostly lands in one cluster of their own.
    main = {}
    for name, ids in assigned.items():
        values, counts = np.unique(ids, return_counts=True)
        assert counts.max() >= 4, f"{name} split over clusters {ids}"
        main[name] = values[np.argmax(counts)]
    assert len(set(main.values())) == len(names), f"strangers merged: {main}"
