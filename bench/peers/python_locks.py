"""The acquire+release cycle of a Python Redis lock library and redis-py's own raw pair (SET NX
PX + DEL), interleaved on one name each, sequential, as `singleton bench` measures ours:

    python python_locks.py LIBRARY REDIS_URL ITERATIONS

LIBRARY is `python-redis-lock` (redis_lock.Lock) or `tooz` (a tooz coordinator on the same
Redis, its get_lock). Prints one JSON object: {"cycle_us": {"p50", "p99"}, "floor_us": {...},
"ratio_p50", "version"}. Run by tests/benchmarks.rs with the interpreter of the virtual
environment that bench/peers/install made from bench/peers/requirements.txt.
"""

import json
import os
import sys
import time
from importlib.metadata import version

import redis

WARM_UP = 200
TTL_SECONDS = 15


def percentiles(samples):
    ordered = sorted(samples)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50": at(0.5), "p99": at(0.99)}


def lock_of(library, url, client, name):
    """A function that acquires and releases `name` once with `library`."""
    if library == "python-redis-lock":
        import redis_lock

        def cycle():
            lock = redis_lock.Lock(client, name, expire=TTL_SECONDS)
            if not lock.acquire(blocking=False):
                raise RuntimeError("a sequential acquire met a conflict")
            lock.release()

        return cycle, lambda: None
    if library == "tooz":
        from tooz import coordination

        coordinator = coordination.get_coordinator(url, f"bench-{os.getpid()}".encode())
        coordinator.start()

        def cycle():
            lock = coordinator.get_lock(name.encode())
            if not lock.acquire(blocking=False):
                raise RuntimeError("a sequential acquire met a conflict")
            lock.release()

        return cycle, coordinator.stop
    raise SystemExit(f"unknown library {library!r}: python-redis-lock or tooz")


def main():
    library, url, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = redis.Redis.from_url(url)
    suffix = f"{os.getpid()}-{time.time_ns()}"
    name = f"py-bench:{suffix}"
    scratch = f"py-bench:{suffix}-scratch"
    cycle, stop = lock_of(library, url, client, name)
    cycles, floors = [], []
    for i in range(WARM_UP + iterations):
        started = time.perf_counter_ns()
        client.set(scratch, "1", px=TTL_SECONDS * 1000, nx=True)
        client.delete(scratch)
        floor_took = (time.perf_counter_ns() - started) / 1000

        started = time.perf_counter_ns()
        cycle()
        cycle_took = (time.perf_counter_ns() - started) / 1000
        if i >= WARM_UP:
            floors.append(floor_took)
            cycles.append(cycle_took)
    stop()
    report = {"cycle_us": percentiles(cycles), "floor_us": percentiles(floors)}
    report["ratio_p50"] = report["cycle_us"]["p50"] / report["floor_us"]["p50"]
    report["version"] = f"{library} {version(library)} + redis-py {version('redis')}"
    print(json.dumps(report))


if __name__ == "__main__":
    main()
