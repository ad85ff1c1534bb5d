import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

torch.set_num_threads(2)
# Timing deadlines fail on a loaded shared machine without saying anything about the code.
settings.register_profile("vrm", deadline=None)
settings.load_profile("vrm")


import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def loaded():
    """The embedded model and its processor, loaded once."""
    from vrm.model import load_model

    return load_model()


@pytest.fixture(scope="session")
def server(loaded):
    """`vrm serve`'s app on the embedded model, on a free loopback port, with small limits."""
    import uvicorn

    from vrm.serve import Engine, Limits
    from vrm.serve.app import create_app

    engine = Engine(*loaded, "vrm-tiny", Limits(max_request_bytes=200_000, max_image_pixels=512 * 512, max_tokens=96))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", engine
    srv.should_exit = True
    thread.join(10)
