// A tagcast-protocol peer on Node's `ws`, for `tagcast bench` to measure beside tagcast.
// Written the way a Node developer would: a tag index (Map of "name=value" to Sets), the
// message encoded once, `ws.send` per recipient. Protocol: SPEC §1 with the `string` parser.
//
// Usage: PORT=0 node server.js   (prints "listening on PORT" once bound; 127.0.0.1 only)
//        TLS_CERT=cert.pem TLS_KEY=key.pem PORT=0 node server.js   (wss)
//        PERMESSAGE_DEFLATE=on PORT=0 node server.js   (ws's default perMessageDeflate: a zlib
//          context per connection, messages under 1024 bytes plain)
//        PERMESSAGE_DEFLATE=256 PORT=0 node server.js  (the same, messages from 256 bytes
//          compressed: tagcast's compression_min_size)
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const MAX_TAGS = 32;
const MAX_TAG_LENGTH = 256;

/** Parses a tags object; returns a Map name -> string value, or throws with the reason. */
function parseTags(value) {
  if (value === undefined) return new Map();
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('tags must be a JSON object');
  }
  const names = Object.keys(value);
  if (names.length > MAX_TAGS) throw new Error(`too many tags: at most ${MAX_TAGS}`);
  const tags = new Map();
  for (const name of names) {
    const tag = value[name];
    if (typeof tag !== 'string' && !Number.isInteger(tag)) {
      throw new Error(`tag ${JSON.stringify(name)} must be a string or an integer`);
    }
    const text = String(tag);
    if (name.length > MAX_TAG_LENGTH || text.length > MAX_TAG_LENGTH) throw new Error('tag too long');
    tags.set(name, text);
  }
  return tags;
}

const everyone = new Set();
const postings = new Map(); // "name\0value" -> Set of clients

function register(client) {
  everyone.add(client);
  for (const [name, value] of client.tags) {
    const key = `${name}\0${value}`;
    if (!postings.has(key)) postings.set(key, new Set());
    postings.get(key).add(client);
  }
}

function unregister(client) {
  everyone.delete(client);
  for (const [name, value] of client.tags) {
    const key = `${name}\0${value}`;
    const set = postings.get(key);
    if (set) {
      set.delete(client);
      if (set.size === 0) postings.delete(key);
    }
  }
}

/** Sends `data` to every client whose tags contain all of `tags`. */
function route(tags, data) {
  let candidates = everyone;
  for (const [name, value] of tags) {
    const set = postings.get(`${name}\0${value}`);
    if (!set) return;
    if (set.size < candidates.size) candidates = set;
  }
  for (const client of candidates) {
    let matches = true;
    for (const [name, value] of tags) {
      if (client.tags.get(name) !== value) { matches = false; break; }
    }
    if (matches && client.readyState === client.OPEN) client.send(data);
  }
}

function handleRequest(client, text) {
  let request;
  try {
    request = JSON.parse(text);
  } catch (error) {
    return client.close(4400, 'request is not JSON');
  }
  if (request === null || typeof request !== 'object' || Array.isArray(request)) {
    return client.close(4400, 'request must be a JSON object');
  }
  for (const key of Object.keys(request)) {
    if (key !== 'message' && key !== 'tags' && key !== 'metadata') {
      return client.close(4400, `unknown key ${key}`);
    }
  }
  if (typeof request.message !== 'string') {
    return client.close(4400, 'message must be a string: configure a message parser');
  }
  let tags;
  try {
    tags = parseTags(request.tags);
  } catch (error) {
    return client.close(4400, error.message);
  }
  route(tags, JSON.stringify(request.message));
}

function plainHttp(request, response) {
  response.writeHead(426, { 'Content-Type': 'text/plain' });
  response.end('WebSocket only\n');
}
const server = process.env.TLS_CERT
  ? https.createServer({ cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY) }, plainHttp)
  : http.createServer(plainHttp);
/** `perMessageDeflate` from PERMESSAGE_DEFLATE: off (unset), on (ws's defaults), or a threshold. */
function perMessageDeflate(value) {
  if (value === undefined || value === '' || value === 'off') return false;
  if (value === 'on') return true;
  const threshold = Number(value);
  if (!Number.isInteger(threshold) || threshold < 0) {
    throw new Error(`PERMESSAGE_DEFLATE must be off, on or a threshold in bytes, not ${value}`);
  }
  return { threshold };
}
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: perMessageDeflate(process.env.PERMESSAGE_DEFLATE),
});

server.on('upgrade', (request, socket, head) => {
  let tags;
  try {
    const query = new URL(request.url, 'http://localhost').searchParams;
    tags = parseTags(query.has('tags') ? JSON.parse(query.get('tags')) : undefined);
  } catch (error) {
    socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${error.message}\n`);
    return;
  }
  wss.handleUpgrade(request, socket, head, (client) => {
    client.tags = tags;
    register(client);
    client.on('message', (data, isBinary) => {
      if (isBinary) return client.close(1003, 'binary frames are not supported: send JSON text');
      handleRequest(client, data.toString());
    });
    client.on('close', () => unregister(client));
    client.on('error', () => unregister(client));
  });
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
