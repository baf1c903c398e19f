// An EventSource from the npm `eventsource` package (the client Node servers use), reporting
// what it sees as one JSON line per happening on stdout, for tests/e2e/test_node_eventsource.py.
//
//   node client.mjs <url> <event type>...
//
// Lines: {"kind":"open"}, {"kind":"error"}, {"kind":"event","type":...,"data":...,"lastEventId":...}.
import { EventSource } from "eventsource";

const [url, ...types] = process.argv.slice(2);
const report = (item) => process.stdout.write(JSON.stringify(item) + "\n");
const source = new EventSource(url);
source.onopen = () => report({ kind: "open" });
source.onerror = (e) => report({ kind: "error", message: String(e.message || ""), readyState: source.readyState });
for (const type of ["message", ...types]) {
  source.addEventListener(type, (e) =>
    report({ kind: "event", type: e.type, data: e.data, lastEventId: e.lastEventId }));
}
// The test ends this process by closing its stdin (or by its PID).
process.stdin.on("end", () => { source.close(); process.exit(0); });
process.stdin.resume();
