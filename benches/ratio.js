// Server CPU per delivery of one server against another, per run, from `tagcast bench` JSON
// lines tagged by the scripts in benches/ (server_name, run): each run's repetitions of a
// scenario are summed (CPU seconds ÷ deliveries), so that a run's figure does not hang on one
// fanout's interleaving with the tool. Lost deliveries are counted in the `lost` column.
// Usage: node benches/ratio.js RESULTS.jsonl BASE OTHER   (e.g. tagcast-off tagcast-shared)
'use strict';
const { read, scenarioName } = require('./lines.js');

const [file, base, other] = process.argv.slice(2);
if (!other) {
  console.error('usage: node benches/ratio.js RESULTS.jsonl BASE OTHER');
  process.exit(2);
}
// scenario -> run -> server -> { cpu, deliveries, lost, count }
const sums = new Map();
for (const line of read(file)) {
  if (line.scenario === 'conns' || !line.server || !(line.received > 0)) continue;
  if (line.server_name !== base && line.server_name !== other) continue;
  const scenario = scenarioName(line);
  if (!sums.has(scenario)) sums.set(scenario, new Map());
  const runs = sums.get(scenario);
  if (!runs.has(line.run)) runs.set(line.run, {});
  const sum = runs.get(line.run)[line.server_name] ??= { cpu: 0, deliveries: 0, lost: 0, count: 0 };
  sum.cpu += line.server.cpu_s;
  sum.deliveries += line.received;
  sum.lost += line.loss;
  sum.count += 1;
}
const perMillion = (sum) => (sum ? (sum.cpu / sum.deliveries) * 1e6 : null);
const fixed = (value) => (value === null ? '-' : value.toFixed(3));
console.log(`\nServer CPU s per million deliveries, ${other} ÷ ${base}, each run's repetitions summed.\n`);
console.log(`| scenario | run | reps | ${base} s/M | ${other} s/M | ${other} ÷ ${base} | lost |`);
console.log('|---|---|---|---|---|---|---|');
for (const [scenario, runs] of sums) {
  for (const [run, servers] of runs) {
    const [a, b] = [perMillion(servers[base]), perMillion(servers[other])];
    const both = [servers[base], servers[other]];
    const reps = both.map((sum) => (sum ? sum.count : 0)).join(' / ');
    const lost = both.map((sum) => (sum ? sum.lost : 0)).join(' / ');
    const ratio = a && b ? (b / a).toFixed(2) : '-';
    console.log(`| ${scenario} | ${run} | ${reps} | ${fixed(a)} | ${fixed(b)} | ${ratio} | ${lost} |`);
  }
}
