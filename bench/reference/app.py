"""The reference: the FastAPI chat of the seed document (shared/seeds/000_*.txt), kept as written there,
so the benchmark compares against what this project started from. Only the HTML page is left out: the
benchmark talks to /ws/{client_id} directly.

Run by tools/bench.sh: uvicorn app:app --host 127.0.0.1 --port PORT (one worker).
"""

from typing import List

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


class ConnectionManager:
    def __init__(self):
        self.active_connections: List[WebSocket] = []

    async def connect(self, websocket: WebSocket):
        await websocket.accept()
        self.active_connections.append(websocket)

    def disconnect(self, websocket: WebSocket):
        self.active_connections.remove(websocket)

    async def broadcast(self, message: str):
        # The seed's broadcast: each peer's send awaited in turn, so one slow peer stalls everyone.
        for connection in self.active_connections:
            await connection.send_text(message)


manager = ConnectionManager()


@app.websocket("/ws/{client_id}")
async def websocket_endpoint(websocket: WebSocket, client_id: int):
    await manager.connect(websocket)
    try:
        while True:
            data = await websocket.receive_text()
            await manager.broadcast(f"Client #{client_id} says: {data}")
    except WebSocketDisconnect:
        manager.disconnect(websocket)
        await manager.broadcast(f"Client #{client_id} left the chat")
