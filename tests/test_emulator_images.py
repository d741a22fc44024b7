"""The emulator's text-to-image models: real decodable images in each model's wire form, at
the requested size, the same for the same prompt and seed, validated against the published
input schema, metered per tile and step; corrupt answers on demand."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from pipelines.catalog.metering import Usage, neurons
from pipelines.catalog.models import get_model
from pipelines.emulator import RunningEmulator
from pipelines.media.images import NotAnImage, inspect_image, sniff

FLUX = "@cf/black-forest-labs/flux-1-schnell"
SDXL = "@cf/bytedance/stable-diffusion-xl-lightning"
DREAM = "@cf/lykon/dreamshaper-8-lcm"
PHOENIX = "@cf/leonardo/phoenix-1.0"
LUCID = "@cf/leonardo/lucid-origin"


def image_of(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    if response.headers["content-type"] == "application/json":
        body = response.json()
        assert body["success"] is True and set(body["result"]) == {"image"}
        return base64.b64decode(body["result"]["image"], validate=True)
    return response.content


def test_each_model_answers_in_its_published_wire_form(emu_client: httpx.Client) -> None:
    forms = {FLUX: "application/json", LUCID: "application/json"}
    forms |= {SDXL: "image/png", DREAM: "image/png", PHOENIX: "image/jpeg"}
    for model, content_type in forms.items():
        body: dict[str, object] = {"prompt": "a lighthouse at dusk"}
        if model != FLUX:
            body |= {"width": 256, "height": 384}
        response = emu_client.post(f"/run/{model}", json=body)
        assert response.headers["content-type"] == content_type, model
        info = inspect_image(image_of(response))
        assert (info.width, info.height) == ((1024, 1024) if model == FLUX else (256, 384))
        assert info.format == ("png" if content_type == "image/png" else "jpeg")


def test_images_are_deterministic_for_a_prompt_and_seed(emu_client: httpx.Client) -> None:
    def make(prompt: str, seed: int) -> bytes:
        body = {"prompt": prompt, "seed": seed, "width": 256, "height": 256}
        return image_of(emu_client.post(f"/run/{SDXL}", json=body))

    first = make("a red bicycle", 7)
    assert make("a red bicycle", 7) == first
    assert make("a red bicycle", 8) != first and make("a blue bicycle", 7) != first
    colours = Image.open(io.BytesIO(first)).convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 2  # a picture, not a blank


@pytest.mark.parametrize(
    ("model", "body", "where"),
    [
        (FLUX, {"prompt": "x", "width": 512}, "additionalProperties"),  # flux takes no size
        (FLUX, {"prompt": "x", "steps": 9}, "maximum"),
        (SDXL, {"prompt": "x", "num_steps": 21}, "maximum"),
        (SDXL, {"prompt": "x", "width": 128}, "minimum"),
        (PHOENIX, {"prompt": "x", "guidance": 1}, "minimum"),
        (PHOENIX, {"prompt": ""}, "minLength"),
    ],
)
def test_inputs_are_checked_against_the_published_schema(
    emu_client: httpx.Client, model: str, body: dict[str, object], where: str
) -> None:
    response = emu_client.post(f"/run/{model}", json=body)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == 5006 and where in error["message"]


def test_metering_is_per_tile_and_step(emu: RunningEmulator, emu_client: httpx.Client) -> None:
    image_of(emu_client.post(f"/run/{FLUX}", json={"prompt": "a cat", "steps": 4}))
    body = {"prompt": "a cat", "width": 1000, "height": 600, "num_steps": 5}
    image_of(emu_client.post(f"/run/{PHOENIX}", json=body))
    image_of(emu_client.post(f"/run/{SDXL}", json={"prompt": "a cat", "width": 256, "height": 256}))
    stats = emu.stats()
    flux, phoenix, sdxl = (stats["models"][m] for m in (FLUX, PHOENIX, SDXL))
    assert (flux["tiles"], flux["steps"]) == (4, 4)
    assert flux["neurons"] == pytest.approx(57.6)
    assert (phoenix["tiles"], phoenix["steps"]) == (4, 5)  # 1000x600: 2 x 2 tiles, rounded up
    assert phoenix["neurons"] == pytest.approx(4 * 530 + 5 * 10)
    assert sdxl["requests"] == 1 and sdxl["neurons"] == 0.0  # beta: unpriced, still counted
    assert stats["neurons_today"] == pytest.approx(57.6 + 2170)
    billed = Usage(tiles=phoenix["tiles"], steps=phoenix["steps"])
    assert neurons(get_model(PHOENIX), billed) == pytest.approx(phoenix["neurons"])


@pytest.mark.emulator(corrupt_image_rate=1.0)
def test_corrupt_images_announce_their_format_but_do_not_decode(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    for model in (SDXL, FLUX):
        data = image_of(emu_client.post(f"/run/{model}", json={"prompt": "a cat"}))
        assert sniff(data) == ("png" if model == SDXL else "jpeg")
        with pytest.raises(NotAnImage, match="does not decode"):
            inspect_image(data)
    assert emu.stats()["models"][FLUX]["neurons"] == pytest.approx(57.6)  # served, billed


@pytest.mark.emulator(malformed_rate=1.0)
def test_a_malformed_binary_answer_is_cut_short_and_not_billed(
    emu: RunningEmulator, emu_client: httpx.Client
) -> None:
    data = image_of(emu_client.post(f"/run/{PHOENIX}", json={"prompt": "a cat", "num_steps": 2}))
    with pytest.raises(NotAnImage):
        inspect_image(data)
    assert emu.stats()["neurons_today"] == 0
