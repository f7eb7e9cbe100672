"""Where a run's data sits: resident on the device when it leaves room to train, else streamed."""

from __future__ import annotations

import pytest
import torch

from suite.data.placement import DEVICE_SHARE, PLACEMENTS, choose_placement

GiB = 2**30
GPU = torch.device("cuda", 0)  # a device name: deciding needs no GPU


def test_a_gpu_keeps_data_that_takes_at_most_its_share_of_free_memory():
    free = 80 * GiB
    fits = choose_placement("auto", int(DEVICE_SHARE * free), GPU, free)
    assert fits.mode == "device"
    assert fits.describe() == "data: 40.00 GiB resident on cuda:0"
    big = choose_placement("auto", int(DEVICE_SHARE * free) + 1, GPU, free)
    assert big.mode == "stream"
    assert big.describe() == ("data: 40.00 GiB does not fit in 50% of the 80.0 GiB free on cuda:0; "
                              "streamed from host memory, each batch copied to cuda:0")


def test_paper1_food101_at_256px_streams_on_a_24_gib_gpu_and_stays_on_an_80_gib_one():
    # 75,750 train + 25,250 test images of 3 x 256 x 256 uint8, plus int64 labels
    data = 101_000 * 3 * 256 * 256 + 101_000 * 8
    assert choose_placement("auto", data, GPU, 23 * GiB).mode == "stream"
    assert choose_placement("auto", data, GPU, 79 * GiB).mode == "device"


def test_host_memory_devices_keep_the_data_where_it_is_and_a_forced_choice_holds():
    cpu = torch.device("cpu")
    assert choose_placement("auto", 10**12, cpu, 10**9).mode == "device"
    assert choose_placement("auto", 10**12, cpu, 10**9).free_bytes is None
    forced = choose_placement("stream", 10, GPU, 100 * GiB)
    assert forced.mode == "stream"
    assert forced.describe().endswith("copied to cuda:0 (data_placement=stream)")
    assert choose_placement("device", 10**12, GPU, GiB).mode == "device"


def test_an_unknown_placement_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"data_placement='gpu': choose one of auto, device, stream"):
        choose_placement("gpu", 1, GPU, None)
    assert PLACEMENTS == ("auto", "device", "stream")


def test_resident_data_leaves_the_model_the_rest_of_the_gpu():
    free = 24 * GiB
    resident = choose_placement("auto", 10 * GiB, GPU, free)
    assert resident.model_room(free) == 14 * GiB  # what check_fits compares the model with
    assert choose_placement("auto", 13 * GiB, GPU, free).model_room(free) == free  # streamed
    assert choose_placement("device", 30 * GiB, GPU, free).model_room(free) == 0  # forced: no room
    cpu = choose_placement("auto", 10 * GiB, torch.device("cpu"), free)
    assert cpu.model_room(free) == free  # host memory measured with the data already in it
    assert resident.model_room(None) is None
