"""`qwick serve --ray`'s application: two Serve replicas (an engine each) behind one endpoint answer concurrent
chat and gate requests through the `openai` client; killing one replica's actor does not stop the service."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

MODEL = "tiny"
GATES = """
gates:
  - name: topic
    kind: classify
    instruction: "Answer with one of: {labels}"
    labels: [sports, politics, food]
"""

pytest.importorskip("ray")  # the whole module needs Ray (pip install qwick[ray])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tiny_model_dir, tmp_path_factory) -> Iterator[str]:
    from ray import serve

    from qwick.ray import Scaling, build_app

    gates = tmp_path_factory.mktemp("gates") / "gates.yaml"
    gates.write_text(GATES)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = build_app(str(tiny_model_dir), served_model_name=MODEL, gates=gates, dtype="float32", device="cpu",
                    max_model_len=256, scaling=Scaling(replicas=2, cpus_per_replica=0.5, shutdown_timeout_s=5))
    serve.run(app, name="qwick", route_prefix="/")
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def client(endpoint: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{endpoint}/v1", api_key="unused", max_retries=0, timeout=60)


def running_replicas() -> int:
    from ray import serve

    return serve.status().applications["qwick"].deployments["qwick"].replica_states.get("RUNNING", 0)


def replica_actor(ray: Any) -> Any:
    """One replica's actor handle (by the name Serve gives it; the state API would need the dashboard)."""
    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if "SERVE_REPLICA" in a["name"]]
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])


def chat(endpoint: str, i: int) -> str:
    reply = client(endpoint).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=4, temperature=0)
    return reply.choices[0].finish_reason


def moderate(endpoint: str, i: int) -> dict:
    return client(endpoint).post("/moderate", body={"text": f"text {i}"}, cast_to=httpx.Response).json()


def test_two_replicas_answer_concurrent_chat_and_gate_requests(endpoint):
    assert running_replicas() == 2
    with ThreadPoolExecutor(8) as pool:
        chats = list(pool.map(lambda i: chat(endpoint, i), range(12)))
        gates = list(pool.map(lambda i: moderate(endpoint, i), range(12)))
        topics = list(pool.map(lambda i: client(endpoint).post(
            "/classify", body={"text": f"the match {i}", "gate": "topic"}, cast_to=httpx.Response).json(), range(6)))
    assert set(chats) <= {"stop", "length"} and len(chats) == 12
    assert all(g["gate"] == "moderate" and isinstance(g["allow"], bool) for g in gates)
    assert all(t["label"] in ("sports", "politics", "food") for t in topics)  # the gates file reached the replicas
    embedding = client(endpoint).embeddings.create(model=MODEL, input=["a", "b"])
    assert len(embedding.data) == 2
    metrics = httpx.get(f"{endpoint}/metrics", timeout=30)
    assert metrics.status_code == 200 and "qwick" in metrics.text  # each replica serves its own engine's metrics


def test_a_killed_replica_does_not_stop_the_service(endpoint, ray_cluster):
    assert running_replicas() == 2
    victim = replica_actor(ray_cluster)
    in_flight = ThreadPoolExecutor(4)
    long_requests = [in_flight.submit(httpx.post, f"{endpoint}/v1/completions", timeout=60, json={
        "model": MODEL, "prompt": f"story {i}", "max_tokens": 200, "temperature": 0, "ignore_eos": True})
        for i in range(4)]
    time.sleep(0.3)
    ray_cluster.kill(victim, no_restart=True)  # Serve's controller replaces it
    for future in long_requests:  # those on the killed replica fail cleanly: 5xx in the API's error shape
        response = future.result()
        if response.status_code != 200:
            assert response.status_code >= 500 and set(response.json()["error"]) >= {"message", "type", "code"}
    in_flight.shutdown()
    # new requests go to the live replica (the proxy may route one more to the dead one, which fails cleanly)
    answered = 0
    deadline = time.monotonic() + 60
    while answered < 6 and time.monotonic() < deadline:
        try:
            chat(endpoint, answered)
            answered += 1
        except openai.APIStatusError as exc:
            assert exc.status_code >= 500 and "error" in exc.response.json()
    assert answered == 6
    deadline = time.monotonic() + 90  # and Ray brings the replica count back to two
    while running_replicas() < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert running_replicas() == 2
