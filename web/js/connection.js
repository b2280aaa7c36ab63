// The tab's one WebSocket to /api/v1/console, with its subscriptions.
//
// A subscription is {topic, params(), on*(message)}: params() is called at every
// (re)connection, so it returns where to resume (the last event id or log offset the
// view has). After a disconnect the connection retries with exponential backoff
// (0.5 s doubling to 15 s, with jitter) and subscribes everything again.

const MIN_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 15000;
const decoder = new TextDecoder();

export class Connection {
  constructor(path = "/api/v1/console") {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.url = `${scheme}//${location.host}${path}`;
    this.subscriptions = new Map();
    this.nextId = 1;
    this.socket = null;
    this.backoff = MIN_BACKOFF_MS;
    this.pingInterval = 15000;
    this.lastMessage = 0;
    this.statusListeners = new Set();
    this.status = { state: "connecting", retryIn: 0 };
    setInterval(() => this.checkAlive(), 5000);
  }

  start() {
    this.connect();
  }

  onStatus(listener) {
    this.statusListeners.add(listener);
    listener(this.status);
  }

  setStatus(status) {
    this.status = status;
    for (const listener of this.statusListeners) listener(status);
  }

  connect() {
    this.setStatus({ state: "connecting", retryIn: 0 });
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.lastMessage = Date.now();
    });
    socket.addEventListener("message", (event) => {
      this.lastMessage = Date.now();
      this.receive(event.data);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      const delay = Math.min(MAX_BACKOFF_MS, this.backoff) * (0.75 + Math.random() * 0.5);
      this.backoff = Math.min(MAX_BACKOFF_MS, this.backoff * 2);
      this.setStatus({ state: "closed", retryIn: Math.ceil(delay / 1000), retryAt: Date.now() + delay });
      setTimeout(() => this.connect(), delay);
    });
  }

  // A connection that has been silent for three ping intervals is dead, though the
  // browser may not have noticed yet: close it, which starts a reconnect.
  checkAlive() {
    if (this.socket && this.socket.readyState === WebSocket.OPEN
        && Date.now() - this.lastMessage > 3 * this.pingInterval) {
      this.socket.close();
    }
  }

  receive(data) {
    if (typeof data !== "string") {
      const bytes = new Uint8Array(data);
      const newline = bytes.indexOf(10);
      const header = JSON.parse(decoder.decode(bytes.subarray(0, newline)));
      this.subscriptions.get(header.sub)?.onLog?.(header, bytes.subarray(newline + 1));
      return;
    }
    const message = JSON.parse(data);
    if (message.type === "hello") {
      this.pingInterval = message.ping_interval_ms;
      this.backoff = MIN_BACKOFF_MS;
      this.setStatus({ state: "open", retryIn: 0 });
      for (const [id, subscription] of this.subscriptions) this.sendSubscribe(id, subscription);
      return;
    }
    if (message.type === "ping") return;
    if (!message.sub) {
      console.warn("console protocol error", message);
      return;
    }
    const subscription = this.subscriptions.get(message.sub);
    if (!subscription) return;
    if (message.type === "resync") {
      subscription.onResync?.(message);
      this.sendSubscribe(message.sub, subscription);
      return;
    }
    subscription.onMessage?.(message);
  }

  sendSubscribe(id, subscription) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN || this.status.state !== "open") return;
    this.socket.send(JSON.stringify({ type: "subscribe", sub: id, topic: subscription.topic,
                                      ...subscription.params() }));
  }

  // Subscribe; returns a function that unsubscribes.
  subscribe(subscription) {
    const id = `s${this.nextId++}`;
    this.subscriptions.set(id, subscription);
    this.sendSubscribe(id, subscription);
    return () => {
      this.subscriptions.delete(id);
      if (this.socket && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(JSON.stringify({ type: "unsubscribe", sub: id }));
      }
    };
  }
}
