"""The differential-diffusion loop on its own, with a recording stand-in for the UNet."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
)

from outpaint_engine.differential import (
    Conditioning,
    UnsupportedSchedulerError,
    check_scheduler,
    denoise,
    keep_masks,
    latent_preview,
    noised_original,
    stack_candidates,
)
from outpaint_engine.models import dpmpp_2m_karras

SDXL_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}


class RecordingUNet:
    """Predicts zero noise and remembers every latent input it was given."""

    def __init__(self) -> None:
        self.inputs: list[torch.Tensor] = []

    def __call__(self, sample: torch.Tensor, t: torch.Tensor, **_: object) -> tuple[torch.Tensor]:
        self.inputs.append(sample.clone())
        return (torch.zeros_like(sample),)


def _scheduler() -> DPMSolverMultistepScheduler:
    return dpmpp_2m_karras(EulerDiscreteScheduler(**SDXL_BETAS).config)


def _cond(batch: int = 1) -> Conditioning:
    return Conditioning(torch.zeros(batch, 77, 64), torch.zeros(batch, 32), torch.zeros(batch, 6))


def _noise_of(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))


def test_noised_originals_follow_the_scheduler_sigmas_one_level_per_step() -> None:
    steps = 6
    scheduler = _scheduler()
    scheduler.set_timesteps(steps)
    x0 = torch.randn(1, 4, 8, 8)
    eps = torch.randn(1, 4, 8, 8)
    sigmas = scheduler.sigmas[:steps]
    levels = [noised_original(x0, eps, sigma) for sigma in sigmas]

    # The same as the scheduler's own noising of each timestep (a fresh scheduler, no begin index).
    for i, t in enumerate(scheduler.timesteps):
        expected = scheduler.add_noise(x0, eps, t.reshape(1))
        torch.testing.assert_close(levels[i], expected)
    # Every step has its own level, and the noise share falls step after step.
    noise_share = [
        float(((lv - x0 / (1 + s**2) ** 0.5) / eps).mean()) for lv, s in zip(levels, sigmas, strict=True)
    ]
    assert all(a > b for a, b in itertools.pairwise(noise_share))
    assert noise_share[0] > 0.99  # Karras sigma_max ≈ 14.6: nearly pure noise
    assert noise_share[-1] < 0.1


def _inputs_and_levels(
    change: torch.Tensor, steps: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run the loop (no guidance) on random latents; pair each UNet input with its step's noised original."""
    x0 = torch.randn(1, 4, 8, 8)
    unet = RecordingUNet()
    generator = torch.Generator("cpu").manual_seed(seed)
    denoise(unet, _scheduler(), x0, change, _cond(), steps=steps, guidance=1.0, generator=generator)
    eps = _noise_of(seed, tuple(x0.shape))
    reference = _scheduler()
    reference.set_timesteps(steps)
    assert len(unet.inputs) == steps
    return [(seen, noised_original(x0, eps, reference.sigmas[i])) for i, seen in enumerate(unet.inputs)]


def test_the_loop_pins_the_kept_area_to_each_steps_noised_original() -> None:
    change = torch.zeros(8, 8)
    change[:, :4] = 1.0  # left half kept, right half free
    for i, (seen, level) in enumerate(_inputs_and_levels(change, steps=4, seed=7)):
        torch.testing.assert_close(seen[..., :4], level[..., :4])
        if i == 0:
            torch.testing.assert_close(seen, level)  # the whole window starts from noised[0]
        else:
            assert not torch.allclose(seen[..., 4:], level[..., 4:])  # the free half follows the model


def test_a_gray_map_is_pinned_for_its_share_of_the_steps() -> None:
    pairs = _inputs_and_levels(torch.full((8, 8), 0.5), steps=4, seed=3)
    pinned = [torch.allclose(seen, level) for seen, level in pairs]
    assert pinned == [True, True, False, False]  # 0.5 > 0/4, 1/4 but not 2/4, 3/4


def test_keep_masks_thresholds() -> None:
    masks = keep_masks(torch.tensor([[0.0, 0.3, 0.6, 1.0]]), 4)
    assert masks.shape == (4, 1, 1, 4)
    assert masks[:, 0, 0].tolist() == [
        [0.0, 1.0, 1.0, 1.0],
        [0.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 0.0, 1.0],
    ]


def test_guidance_runs_a_batch_of_two_and_checks_the_conditioning() -> None:
    unet = RecordingUNet()
    x0 = torch.zeros(1, 4, 8, 8)
    gen = torch.Generator("cpu").manual_seed(0)
    denoise(unet, _scheduler(), x0, torch.ones(8, 8), _cond(2), steps=2, guidance=4.0, generator=gen)
    assert [s.shape[0] for s in unet.inputs] == [2, 2]
    with pytest.raises(ValueError, match="batch"):
        denoise(unet, _scheduler(), x0, torch.ones(8, 8), _cond(1), steps=2, guidance=4.0, generator=gen)


class ConstantUNet:
    """Predicts a constant noise per batch item (a list of values, negative first under guidance)."""

    def __init__(self, *values: float) -> None:
        self.values = values

    def __call__(self, sample: torch.Tensor, t: torch.Tensor, **_: object) -> tuple[torch.Tensor]:
        return (torch.stack([torch.full_like(sample[0], v) for v in self.values]),)


def test_guidance_moves_from_the_negative_towards_the_prompt() -> None:
    negative, prompt, guidance = 0.1, 0.3, 4.0
    x0 = torch.randn(1, 4, 8, 8)
    change = torch.linspace(0, 1, 8).expand(8, 8)

    def run(unet: ConstantUNet, cond: Conditioning, scale: float) -> torch.Tensor:
        gen = torch.Generator("cpu").manual_seed(5)
        return denoise(unet, _scheduler(), x0, change, cond, steps=3, guidance=scale, generator=gen)

    guided = run(ConstantUNet(negative, prompt), _cond(2), guidance)
    combined = negative + guidance * (prompt - negative)
    torch.testing.assert_close(guided, run(ConstantUNet(combined), _cond(1), 1.0))


def test_a_raising_callback_stops_the_loop() -> None:
    unet = RecordingUNet()

    def stop_after_two(step) -> None:
        if step.index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise(
            unet,
            _scheduler(),
            torch.zeros(1, 4, 8, 8),
            torch.zeros(8, 8),
            _cond(),
            steps=5,
            guidance=1.0,
            generator=torch.Generator("cpu").manual_seed(0),
            on_step=stop_after_two,
        )
    assert len(unet.inputs) == 2


@pytest.mark.parametrize("second_order", [HeunDiscreteScheduler, KDPM2DiscreteScheduler])
def test_second_order_schedulers_are_refused(second_order: type) -> None:
    scheduler = second_order(**SDXL_BETAS)
    with pytest.raises(UnsupportedSchedulerError, match="second-order"):
        check_scheduler(scheduler)
    with pytest.raises(UnsupportedSchedulerError, match="second-order"):
        denoise(
            RecordingUNet(),
            scheduler,
            torch.zeros(1, 4, 8, 8),
            torch.zeros(8, 8),
            _cond(),
            steps=3,
            guidance=1.0,
            generator=torch.Generator("cpu").manual_seed(0),
        )


def test_other_noise_conventions_are_refused() -> None:
    with pytest.raises(UnsupportedSchedulerError, match="not supported"):
        check_scheduler(EulerDiscreteScheduler(**SDXL_BETAS))
    check_scheduler(_scheduler())


def test_latent_preview_is_a_small_rgb_image() -> None:
    preview = latent_preview(torch.randn(1, 4, 8, 12))
    assert preview.shape == (8, 12, 3)
    assert preview.dtype.name == "uint8"
    assert preview.std() > 0


class ConditionedUNet:
    """Elementwise in the sample, reading one number of each row's text and image conditioning: a
    batch gives every row exactly what that row alone gives, so candidates can be compared bit
    for bit (a real UNet's larger matrix products may round differently)."""

    def __call__(self, sample, t, *, encoder_hidden_states, added_cond_kwargs, **_) -> tuple[torch.Tensor]:
        rows = (-1, 1, 1, 1)
        text = encoder_hidden_states[:, 0, 0].reshape(rows)
        image = added_cond_kwargs["image_embeds"][0][:, 0, 0, 0].reshape(rows)
        return (sample * 0.3 + text + image + t.float() * 1e-4,)


def _candidate_cond(k: int) -> Conditioning:
    """Negative then prompt, with candidate ``k``'s own image embedding."""
    text = torch.stack([torch.full((77, 64), -0.2), torch.full((77, 64), 0.1)])
    image = torch.stack([torch.zeros(6, 16, 64), torch.full((6, 16, 64), 0.05 * (k + 1))])
    return Conditioning(text, torch.zeros(2, 32), torch.zeros(2, 6), [image])


def test_candidates_in_one_batch_equal_their_runs_alone() -> None:
    """N candidates (own latents, own image prompt, own generator) denoised as one batch equal N
    separate runs; the batch is ordered negatives first, as the guidance split reads it."""
    seeds, steps = (11, 12, 13), 4
    x0 = [torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(100 + s)) for s in seeds]
    change = torch.linspace(0, 1, 8).expand(8, 8)
    conds = [_candidate_cond(k) for k in range(len(seeds))]

    def run(latents, cond, generator) -> torch.Tensor:
        return denoise(
            ConditionedUNet(),
            _scheduler(),
            latents,
            change,
            cond,
            steps=steps,
            guidance=4.0,
            generator=generator,
        )

    alone = [run(x, c, torch.Generator().manual_seed(s)) for x, c, s in zip(x0, conds, seeds, strict=True)]
    batch = Conditioning(
        stack_candidates([c.prompt_embeds for c in conds]),
        stack_candidates([c.pooled_embeds for c in conds]),
        stack_candidates([c.time_ids for c in conds]),
        [stack_candidates([c.image_embeds[0] for c in conds])],
    )
    assert batch.prompt_embeds[:3, 0, 0].tolist() == pytest.approx([-0.2] * 3)  # negatives first
    together = run(torch.cat(x0), batch, [torch.Generator().manual_seed(s) for s in seeds])
    assert together.shape == (3, 4, 8, 8)
    for k, one in enumerate(alone):
        assert torch.equal(together[k : k + 1], one)
    assert not torch.equal(alone[0], alone[1])


def test_a_batch_needs_one_generator_per_candidate_and_a_matching_conditioning() -> None:
    x0 = torch.zeros(2, 4, 8, 8)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    with pytest.raises(ValueError, match="generators"):
        denoise(RecordingUNet(), _scheduler(), x0, torch.ones(8, 8), _cond(4), steps=2, guidance=4.0,
                generator=gens[0])  # fmt: skip
    with pytest.raises(ValueError, match="batch"):
        denoise(RecordingUNet(), _scheduler(), x0, torch.ones(8, 8), _cond(2), steps=2, guidance=4.0,
                generator=gens)  # fmt: skip
