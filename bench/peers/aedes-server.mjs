// The aedes peer for `npm run bench`: aedes (in-memory persistence, its defaults) behind a
// `ws` WebSocket server on 127.0.0.1, the way aedes' docs serve MQTT over WebSocket
// (createWebSocketStream → aedes.handle). Runs as its own process so the bench can read its
// CPU time and memory from /proc. Usage: node aedes-server.mjs <port> [<tcp port>]; prints
// "ready <port>". With a TCP port it also listens for plain MQTT there (net.Server →
// aedes.handle, aedes' own way), for the bench's native fan-in row.
import { createServer } from "node:net";
import { Aedes } from "aedes";
import { WebSocketServer, createWebSocketStream } from "ws";

const port = Number(process.argv[2] ?? 0);
const tcpPort = Number(process.argv[3] ?? 0);
const aedes = await Aedes.createBroker();
const tcp = tcpPort > 0 ? createServer(aedes.handle) : null;
if (tcp) await new Promise((ok) => tcp.listen(tcpPort, "127.0.0.1", ok));
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false, handleProtocols: (protocols) => (protocols.has("mqtt") ? "mqtt" : false) });
wss.on("connection", (ws, req) => {
  const stream = createWebSocketStream(ws);
  stream.on("error", () => ws.terminate());
  aedes.handle(stream, req);
});
aedes.on("clientError", () => {});
aedes.on("connectionError", () => {});
wss.on("listening", () => {
  const addr = wss.address();
  process.stdout.write(`ready ${typeof addr === "object" ? addr.port : port}\n`);
});
const stop = () => {
  wss.close();
  tcp?.close();
  aedes.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
