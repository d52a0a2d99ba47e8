// The acquire+release cycle of redlock (with ioredis, one client, one Redis) and ioredis's own
// raw pair (SET NX PX + DEL), interleaved on one name each, sequential, as `singleton bench`
// measures ours: `node redlock.js REDIS_URL ITERATIONS` prints one JSON object,
// {"cycle_us": {"p50", "p99"}, "floor_us": {...}, "ratio_p50"}. Run by tests/benchmarks.rs
// with NODE_PATH pointing at the modules `npm ci` installed from this directory's lock file.
"use strict";

const Redis = require("ioredis");
const { default: Redlock } = require("redlock");

// More than our 20: V8 compiles the hot path only after some hundred calls.
const WARM_UP = 200;
const TTL_MS = 15000;

function percentiles(samples) {
  const sorted = samples.slice().sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

async function main() {
  const [url, iterations = "500"] = process.argv.slice(2);
  const client = new Redis(url, { enableOfflineQueue: true, maxRetriesPerRequest: 1 });
  // No retries: a sequential cycle never meets a conflict, and one would be an error.
  const redlock = new Redlock([client], { retryCount: 0 });
  const suffix = `${process.pid}-${Date.now()}`;
  const resource = `redlock-bench:${suffix}`;
  const scratch = `redlock-bench:${suffix}-scratch`;
  const microseconds = (from) => Number(process.hrtime.bigint() - from) / 1000;
  const cycle = [];
  const floor = [];
  for (let i = 0; i < WARM_UP + Number(iterations); i++) {
    let started = process.hrtime.bigint();
    await client.set(scratch, "1", "PX", TTL_MS, "NX");
    await client.del(scratch);
    const floorTook = microseconds(started);

    started = process.hrtime.bigint();
    const lock = await redlock.acquire([resource], TTL_MS);
    await lock.release();
    const cycleTook = microseconds(started);
    if (i >= WARM_UP) {
      floor.push(floorTook);
      cycle.push(cycleTook);
    }
  }
  await client.quit();
  const report = { cycle_us: percentiles(cycle), floor_us: percentiles(floor) };
  report.ratio_p50 = report.cycle_us.p50 / report.floor_us.p50;
  console.log(JSON.stringify(report));
}

main().catch((err) => {
  console.error(`redlock benchmark: ${err.stack || err}`);
  process.exit(1);
});
