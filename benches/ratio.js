// Server CPU per delivery of one server against another, per run, from `tagcast bench` JSON
// lines tagged by the scripts in benches/ (server_name, run): each run's repetitions of a
// scenario are summed (CPU seconds ÷ deliveries), so that a run's figure does not hang on one
// fanout's interleaving with the tool.
// Usage: node benches/ratio.js RESULTS.jsonl BASE OTHER   (e.g. tagcast-off tagcast-shared)
'use strict';
const fs = require('fs');

const [file, base, other] = process.argv.slice(2);
const lines = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(JSON.parse)
  .filter((line) => line.scenario !== 'conns' && line.server && line.received > 0);
// scenario -> run -> server -> { cpu, deliveries, count }
const sums = new Map();
for (const line of lines) {
  if (line.server_name !== base && line.server_name !== other) continue;
  const scenario = `${line.scenario} ${line.subscribers}/${line.rooms}/${line.publishers}/` +
    `${line.messages}/${line.size}${line.window === 0 ? ' burst' : ''}`;
  if (!sums.has(scenario)) sums.set(scenario, new Map());
  const runs = sums.get(scenario);
  if (!runs.has(line.run)) runs.set(line.run, {});
  const sum = runs.get(line.run)[line.server_name] ??= { cpu: 0, deliveries: 0, count: 0 };
  sum.cpu += line.server.cpu_s;
  sum.deliveries += line.received;
  sum.count += 1;
}
const perMillion = (sum) => (sum ? (sum.cpu / sum.deliveries) * 1e6 : null);
console.log(`\nServer CPU s per million deliveries, ${other} ÷ ${base}, each run's repetitions summed.\n`);
console.log(`| scenario | run | reps | ${base} s/M | ${other} s/M | ${other} ÷ ${base} |`);
console.log('|---|---|---|---|---|---|');
for (const [scenario, runs] of sums) {
  for (const [run, servers] of runs) {
    const [a, b] = [perMillion(servers[base]), perMillion(servers[other])];
    const reps = [servers[base], servers[other]].map((sum) => (sum ? sum.count : 0)).join(' / ');
    const ratio = a && b ? (b / a).toFixed(2) : '-';
    console.log(`| ${scenario} | ${run} | ${reps} | ${a === null ? '-' : a.toFixed(3)} | ` +
      `${b === null ? '-' : b.toFixed(3)} | ${ratio} |`);
  }
}
