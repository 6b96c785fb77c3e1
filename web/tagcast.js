// tagcast.js: a dependency-free browser module for tagcast's recovery after a reconnect
// (a server with [history] on). It connects with tags or a token, reconnects by itself with a
// jittered backoff, resumes after the last message it saw (?since=ID), and calls back on every
// message, in order and once, and on every gap (some messages may be missing: reload).
//
//   import { subscribe } from "/static/tagcast.js";   // installed as /usr/share/tagcast/tagcast.js
//   const subscription = subscribe("wss://push.example.com/", {
//     tags: { userId: 42 },          // and/or token: "<JWT from your backend>"
//     onMessage: (message, id) => render(message),
//     onGap: () => reloadEverything(),
//   });
//   subscription.close();            // stops for good
//
// Options: tags (object), token (string), since (an id kept from an earlier page, default: from
// now on), onMessage(message, id), onGap(), onOpen(), onClose(code, reason) (each time the socket
// closes), minDelayMs (default 100), maxDelayMs (default 10000).

/** Connects to `url` (ws:// or wss://) and keeps listening until `close()`. */
export function subscribe(url, options = {}) {
  const minDelay = options.minDelayMs ?? 100;
  const maxDelay = options.maxDelayMs ?? 10000;
  let lastId = options.since ?? "";
  let delay = minDelay;
  let socket = null;
  let timer = null;
  let closed = false;

  const call = (name, ...args) => {
    if (typeof options[name] === "function") options[name](...args);
  };

  const address = () => {
    const target = new URL(url);
    if (options.tags) target.searchParams.set("tags", JSON.stringify(options.tags));
    if (options.token) target.searchParams.set("token", options.token);
    target.searchParams.set("since", lastId);
    return target.toString();
  };

  const connect = () => {
    timer = null;
    if (closed) return;
    socket = new WebSocket(address());
    socket.onopen = () => {
      delay = minDelay;
      call("onOpen");
    };
    socket.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return; // not ours: a server without history would have refused `since`
      }
      if (frame.gap === true) {
        call("onGap");
      } else if (typeof frame.id === "string") {
        lastId = frame.id;
        call("onMessage", frame.message, frame.id);
      }
    };
    socket.onclose = (event) => {
      socket = null;
      call("onClose", event.code, event.reason);
      if (closed) return;
      // Full jitter: anywhere between half and all of the current delay, so that clients
      // dropped together do not all come back at once.
      const wait = delay / 2 + Math.random() * (delay / 2);
      delay = Math.min(delay * 2, maxDelay);
      timer = setTimeout(connect, wait);
    };
  };

  connect();
  return {
    /** The id of the last message seen: where the next connection resumes. */
    get lastId() {
      return lastId;
    },
    /** Stops listening for good. */
    close() {
      closed = true;
      if (timer !== null) clearTimeout(timer);
      if (socket !== null) socket.close(1000);
    },
  };
}
