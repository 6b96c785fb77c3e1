// The `tagcast bench` JSON lines the scripts in benches/ write (each tagged with server_name,
// run and load1), and the name a line's scenario goes by in their tables: shared by
// medians.js and ratio.js.
'use strict';
const fs = require('fs');

/** The lines of a results file. */
const read = (file) => fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map(JSON.parse);

/**
 * The scenario with its sizes (subscribers/rooms/publishers/messages/bytes): runs of one
 * scenario with other sizes are apart, and an unpaced run (`--window 0`) is the "burst" twin
 * of its scenario.
 */
const scenarioName = (line) => {
  const sizes = line.scenario === 'conns' ? ''
    : ` ${line.subscribers}/${line.rooms}/${line.publishers}/${line.messages}/${line.size}`;
  return `${line.scenario}${sizes}${line.window === 0 ? ' burst' : ''}`;
};

module.exports = { read, scenarioName };
