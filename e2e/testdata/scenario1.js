// Connect to ArqonBus
const ws = new WebSocket('ws://localhost:9100');

// Subscribe to default channel
const subscription = {
  version: "1.0",
  id: "arq_sub_001",
  type: "command",
  room: "science",
  channel: "general",
  from: "web_client_1",
  timestamp: new Date().toISOString(),
  payload: { command: "join_channel", parameters: {} }
};

// Send chat message
const message = {
  version: "1.0",
  id: "arq_msg_001",
  type: "event",
  room: "science",
  channel: "general",
  from: "web_client_1",
  timestamp: new Date().toISOString(),
  payload: { message: "Hello everyone!" }
};
