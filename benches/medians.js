// Medians of `tagcast bench` JSON lines tagged by the scripts in benches/, as a Markdown table.
// Usage: node benches/medians.js RESULTS.jsonl
'use strict';
const { read, scenarioName } = require('./lines.js');

const lines = read(process.argv[2]);
const median = (values) => {
  const sorted = values.filter((value) => typeof value === 'number').sort((a, b) => a - b);
  if (sorted.length === 0) return null;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};
const groups = new Map();
for (const line of lines) {
  const key = `${scenarioName(line)}\t${line.server_name}\t${line.subscribers}`;
  if (!groups.has(key)) groups.set(key, []);
  groups.get(key).push(line);
}
const fixed = (value, digits) => (value === null ? '-' : value.toFixed(digits));
console.log('Sizes: subscribers/rooms/publishers/messages/bytes. "burst": unpaced (`--window 0`).\n');
console.log('| scenario | server | subs | runs | wire B/deliv | deliveries/s | loss | p50 ms | p99 ms | p99.9 ms | max ms | arrival p99 ms | server CPU s/M | RSS MiB | peak RSS MiB above start | RSS MiB above start after settle | RSS KiB/conn |');
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const [key, group] of groups) {
  const [scenario, server, subscribers] = key.split('\t');
  const pick = (get) => median(group.map(get));
  const rate = pick((line) => line.deliveries_per_s);
  const rss = pick((line) => line.server && line.server.rss_kib);
  // MiB above the RSS the scenario started at (median of the runs), when measured.
  const above = (get) => pick((line) => (line.server && typeof get(line) === 'number'
    ? (get(line) - line.server.rss_start_kib) / 1024 : null));
  console.log(`| ${scenario} | ${server} | ${subscribers} | ${group.length} | ` +
    `${fixed(pick((line) => line.wire_bytes_per_delivery), 1)} | ${scenario === 'conns' ? '-' : (rate / 1e6).toFixed(3) + ' M'} | ` +
    `${Math.max(...group.map((line) => line.loss))} | ` +
    ['p50', 'p99', 'p99_9', 'max'].map((q) => fixed(pick((line) => line.latency_ms[q]), 2)).join(' | ') + ' | ' +
    `${fixed(pick((line) => line.arrival_ms && line.arrival_ms.p99), 2)} | ` +
    `${fixed(pick((line) => line.server && line.server.cpu_s_per_million), 3)} | ${fixed(rss === null ? null : rss / 1024, 1)} | ` +
    `${fixed(above((line) => line.server.rss_peak_kib), 1)} | ${fixed(above((line) => line.server.rss_settled_kib), 1)} | ` +
    `${fixed(pick((line) => line.server && line.server.rss_per_connection_kib), 2)} |`);
}

// Each burst beside its paced twin (same sizes, same server): the burst's share of the paced rate.
const rates = new Map([...groups].map(([key, group]) => [key, median(group.map((line) => line.deliveries_per_s))]));
const ratios = [...rates].filter(([key]) => key.split('\t')[0].endsWith(' burst'))
  .map(([key, burst]) => [key, burst, rates.get(key.replace(' burst\t', '\t'))])
  .filter(([, , paced]) => typeof paced === 'number');
if (ratios.length > 0) {
  console.log('\n| burst | server | burst / paced deliveries/s (medians) |\n|---|---|---|');
  for (const [key, burst, paced] of ratios) {
    const [scenario, server] = key.split('\t');
    console.log(`| ${scenario} | ${server} | ${(burst / paced).toFixed(2)} (${(burst / 1e6).toFixed(3)} M / ${(paced / 1e6).toFixed(3)} M) |`);
  }
}
