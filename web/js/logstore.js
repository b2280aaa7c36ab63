// A step's output in the browser: its bytes in one growing buffer and the start of
// every line. Bytes arrive by server offset, from HTTP reads and WebSocket frames.
// append() keeps them in order with no gap and no duplicate. It skips bytes before the
// known end, and turns a jump forward (bytes dropped from the middle of a long output)
// into a marker line.

const decoder = new TextDecoder("utf-8");
const encoder = new TextEncoder();

export class LogStore {
  constructor() {
    this.bytes = new Uint8Array(1 << 16);
    this.length = 0; // bytes held
    this.serverEnd = 0; // server offset after the last byte held
    this.lineStarts = new Float64Array(1 << 12);
    this.lineStarts[0] = 0;
    this.lineCount = 1; // the last line may still be growing
  }

  reserve(extra) {
    if (this.length + extra <= this.bytes.length) return;
    let size = this.bytes.length;
    while (size < this.length + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  pushLineStart(position) {
    if (this.lineCount === this.lineStarts.length) {
      const grown = new Float64Array(this.lineStarts.length * 2);
      grown.set(this.lineStarts);
      this.lineStarts = grown;
    }
    this.lineStarts[this.lineCount] = position;
    this.lineCount += 1;
  }

  // Add output that starts at server offset `offset`; returns the bytes added.
  append(offset, data, droppedLabel = (count) => `[${count} bytes dropped]`) {
    if (offset + data.length <= this.serverEnd) return 0;
    if (offset < this.serverEnd) {
      data = data.subarray(this.serverEnd - offset);
      offset = this.serverEnd;
    }
    if (offset > this.serverEnd) {
      const atLineStart = this.length === 0 || this.bytes[this.length - 1] === 10;
      const marker = encoder.encode(`${atLineStart ? "" : "\n"}${droppedLabel(offset - this.serverEnd)}\n`);
      this.write(marker);
      this.serverEnd = offset;
    }
    this.write(data);
    this.serverEnd += data.length;
    return data.length;
  }

  write(data) {
    this.reserve(data.length);
    const from = this.length;
    this.bytes.set(data, from);
    this.length += data.length;
    // Search only the bytes just written: the buffer past `length` is unused capacity.
    const written = this.bytes.subarray(from, this.length);
    for (let newline = written.indexOf(10); newline !== -1; newline = written.indexOf(10, newline + 1)) {
      this.pushLineStart(from + newline + 1);
    }
  }

  // Lines to show: the last line counts only when it has bytes.
  get visibleLines() {
    return this.lineStarts[this.lineCount - 1] < this.length ? this.lineCount : this.lineCount - 1;
  }

  lineText(index) {
    const start = this.lineStarts[index];
    let end = index + 1 < this.lineCount ? this.lineStarts[index + 1] - 1 : this.length;
    if (end < start) end = start;
    return decoder.decode(this.bytes.subarray(start, end));
  }

  lineHasEscape(index) {
    const start = this.lineStarts[index];
    const end = index + 1 < this.lineCount ? this.lineStarts[index + 1] : this.length;
    return this.bytes.subarray(start, end).includes(27);
  }

  // The line that contains byte position `position` (binary search over line starts).
  lineAt(position) {
    let low = 0;
    let high = this.lineCount - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if (this.lineStarts[middle] <= position) low = middle;
      else high = middle - 1;
    }
    return low;
  }

  // Find the lines that contain `query` (case-insensitive, escape sequences ignored),
  // reading the buffer in blocks of whole lines. Returns line indexes, at most `limit`.
  search(query, limit = 100000, stripEscapes = (text) => text) {
    const needle = query.toLowerCase();
    const found = [];
    if (!needle) return found;
    const blockLines = 20000;
    for (let first = 0; first < this.visibleLines && found.length < limit; first += blockLines) {
      const last = Math.min(this.visibleLines, first + blockLines);
      const start = this.lineStarts[first];
      const end = last < this.lineCount ? this.lineStarts[last] : this.length;
      const block = stripEscapes(decoder.decode(this.bytes.subarray(start, end))).toLowerCase();
      let line = first;
      let scanned = 0;
      let at = block.indexOf(needle);
      while (at !== -1 && found.length < limit) {
        for (let n = block.indexOf("\n", scanned); n !== -1 && n < at; n = block.indexOf("\n", n + 1)) {
          line += 1;
          scanned = n + 1;
        }
        if (found[found.length - 1] !== line) found.push(line);
        const lineEnd = block.indexOf("\n", at);
        at = lineEnd === -1 ? -1 : block.indexOf(needle, lineEnd + 1);
      }
    }
    return found;
  }
}
