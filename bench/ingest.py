"""Central ingest benchmark: events/s into SQLite and PostgreSQL through a real broker.

Usage::

    .venv/bin/python bench/ingest.py [--events 20000] [--doors 10] [--backends sqlite,postgres]

Starts its own Mosquitto (central/broker.py) and, for PostgreSQL, its own
temp cluster (tests/postgres.py); never the machine's services.

* **Ingest rate**: central's session is created, central stops, N events from
  ``--doors`` doors are queued in the broker, then central starts and the
  clock runs until every event is stored.  This measures broker -> validate
  -> batch write, not how fast one Python publisher can produce.
  Central's own CPU time per event is printed too: on a shared machine it
  says more than the wall-clock rate.
* **Latency**: events published at ``--rate`` per second for ``--seconds``
  while central runs; publish time (the event's ``ts``) to the start of the
  write transaction that stored it (``received_at``), p50 and p95.

Figures go in docs/central.md, with the machine's load at the time.
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import paho.mqtt.client as mqtt  # noqa: E402

from bytelocker import contract  # noqa: E402
from central.broker import ManagedMosquitto  # noqa: E402
from central.collector import Collector  # noqa: E402
from central.store import StoredEvent  # noqa: E402
from config.central import CentralConfig  # noqa: E402


def publisher(broker):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-doors", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def make_events(n, doors, start_seq=1):
    out = []
    for i in range(n):
        door = f"door-{i % doors}"
        kind = "granted" if i % 10 else "denied"
        details = {"person_id": f"p{i % 500}", "distance": 0.3, "frames_used": 3, "decide_ms": 180.0}
        out.append(contract.Event.build(door, start_seq + i // doors, kind, details))
    return out


def config_for(broker, url, folder):
    return CentralConfig.model_validate({
        "mqtt": {"host": broker.host, "port": broker.port},
        "database": {"url": url},
        "storage": {"snapshot_dir": os.path.join(folder, "snapshots")},
        "collector": {"client_id": f"bench-central-{os.path.basename(folder)}"},
    })


def wait_stored(collector, n, timeout):
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    while collector.stats["stored"] < n and time.monotonic() < deadline:
        stop.wait(0.002)
    return collector.stats["stored"] >= n


def bench_rate(broker, url, folder, n, doors):
    config = config_for(broker, url, folder)
    first = Collector(config, threading.Event()).start()
    first.wait_connected(15)
    first.stop()
    client = publisher(broker)
    events = make_events(n, doors)
    infos = [client.publish(contract.events_topic("bytelocker", e.door_id), e.to_json(), qos=1) for e in events]
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()
    collector = Collector(config, threading.Event())
    began, cpu = time.perf_counter(), time.process_time()
    collector.start()
    ok = wait_stored(collector, n, 600)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    stats = dict(collector.stats)
    collector.stop()
    if not ok:
        raise SystemExit(f"only {stats.get('stored', 0)} of {n} events stored: {stats}")
    return n / elapsed, elapsed, cpu / n * 1e6


def bench_latency(broker, url, folder, rate, seconds, doors):
    config = config_for(broker, url, folder)
    collector = Collector(config, threading.Event()).start()
    collector.wait_connected(15)
    base = collector.stats["stored"]
    client = publisher(broker)
    n = int(rate * seconds)
    tick = threading.Event()
    ids = []
    began = time.perf_counter()
    for i in range(n):
        e = make_events(1, 1, start_seq=10_000_000 + i)[0]
        ids.append(str(e.event_id))
        client.publish(contract.events_topic("bytelocker", e.door_id), e.to_json(), qos=1)
        delay = began + (i + 1) / rate - time.perf_counter()
        if delay > 0:
            tick.wait(delay)
    wait_stored(collector, base + n, 120)
    client.disconnect()
    client.loop_stop()
    collector.stop()
    rows = StoredEvent.select(StoredEvent.ts, StoredEvent.received_at).where(StoredEvent.event_id.in_(ids))
    lat = sorted((r.received_at - r.ts).total_seconds() * 1000 for r in rows)
    return statistics.median(lat), lat[int(0.95 * (len(lat) - 1))], len(lat)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--doors", type=int, default=10)
    parser.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bytelocker-bench-") as folder:
        broker = ManagedMosquitto(os.path.join(folder, "broker")).start()
        cluster = None
        try:
            for backend in args.backends.split(","):
                sub = os.path.join(folder, backend)
                os.makedirs(sub)
                if backend == "sqlite":
                    url = f"sqlite:///{sub}/central.db"
                elif backend == "postgres":
                    from tests.postgres import PostgresCluster, postgres_bin

                    if postgres_bin() is None:
                        print("postgres: skipped (initdb/pg_ctl not installed)")
                        continue
                    cluster = cluster or PostgresCluster(postgres_bin()).start()
                    url = cluster.create_database()
                else:
                    raise SystemExit(f"unknown backend {backend!r}")
                rate, elapsed, cpu_us = bench_rate(broker, url, sub, args.events, args.doors)
                print(f"{backend}: ingest {rate:,.0f} events/s ({args.events} events from "
                      f"{args.doors} doors in {elapsed:.2f} s; central used {cpu_us:.0f} us CPU per event)")
                p50, p95, n = bench_latency(broker, url, sub, args.rate, args.seconds, args.doors)
                print(f"{backend}: publish-to-stored latency p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                      f"({n} events at {args.rate:.0f}/s)")
        finally:
            broker.stop()
            if cluster is not None:
                cluster.stop()
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
