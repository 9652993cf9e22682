"""Cosmos Policy inference: policy [s] -> [a, s', V], world model [s, a] -> [s', V], value [s, a, s'] -> V.

One query per observation: its camera images and proprio become the clean latent sequence
(images.py, injection.py), the sampler denoises the frames the mode does not give (sampler.py,
denoiser.py), and the action chunk, future proprio, future images and value are read back from the
sample. By default the future state and value come from the action sample itself ("in parallel");
`autoregressive_future` / `autoregressive_value` run extra world-model / value passes instead.

Requests are batched, and every pass of a request draws its initial noise from the request's own
seed, so a request's result does not depend on its batch-mates beyond floating-point summation order
in batched kernels (CPU float32: equal to ~1e-6; CUDA bf16: ~2e-3). `batch_invariant()` gives the form
whose results are bitwise independent of the batch: on the CPU `pad_to` (every call at one fixed size,
padded with copies of the first request); on CUDA a fixed size is not enough (cuBLAS splits K per tile),
so the DiT's Linears go through invariant_matmul.py's GEMM and the VAE encodes one row per call.

Planning (planners/model_scorer.py) uses two more things, both as NVIDIA's `get_future_state_prediction`
/ `get_value_prediction` (cosmos_utils.py) do with `skip_vae_encoding=True, previous_generated_latent=`:
- `imagine` given a proposal that carries its latent sample (a CosmosPrediction with latents)
  conditions on that sample itself: the raw sampled action frame and the current-state frames the
  action pass saw; nothing is VAE-encoded or re-injected. `value` given such a future likewise
  conditions on its whole sample (everything but the value frame).
- `num_steps` may be one count per request: all requests of a call then run in ONE sampler
  (sampler.sample_rows), a request leaving the batch after its last evaluation. The DiT runs on at
  most `network_batch` rows at a time, or on exactly `pad_to` rows (padded) when pad_to is set, so
  with the batch-invariant form a request's result is bit-identical to running it in a call of its own.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from robofleet.envs.contract import Observation
from robofleet.policies.contract import Prediction, PreparedObservation
from robofleet.policies.cosmos.camera import CameraPreparer
from robofleet.policies.cosmos.causal_encode import pixel_frames
from robofleet.policies.cosmos.config import LATENT_CHANNELS, VAE_SPATIAL_FACTOR
from robofleet.policies.cosmos.denoiser import ConditionedDenoiser
from robofleet.policies.cosmos.embeddings import EmbeddingTable, PseudoEmbeddings
from robofleet.policies.cosmos.images import frames_to_video, pixel_frame, slot_frames, video_to_uint8
from robofleet.policies.cosmos.injection import average_copies, normalize, read_value, tile_into_frame, unnormalize
from robofleet.policies.cosmos.layout import ACTION, FUTURE_PROPRIO, PROPRIO, VALUE, LatentLayout, Mode, Slot, SlotKind
from robofleet.policies.cosmos.network import CosmosNetwork
from robofleet.policies.cosmos.sampler import initial_noise, sample_rows
from robofleet.policies.cosmos.stats import DatasetStats
from robofleet.policies.cosmos.timing import PhaseTimer
from robofleet.policies.prediction import CosmosPrediction  # torch-free: env workers unpickle it

T = TypeVar("T")

IMAGE_THREADS = min(8, os.cpu_count() or 1)  # per policy: raw camera images are JPEG-round-tripped and
# resized per query on these threads (PIL releases the GIL); observations a client prepared already
# (`request_preparer`) skip this.


@dataclass(frozen=True)
class InferenceSettings:
    """How queries are run (validated by factory.make_cosmos)."""

    action_steps: int = 5  # network evaluations for the action sample
    future_steps: int = 1  # ... for a world-model pass (imagine, autoregressive_future)
    value_steps: int = 1  # ... for a value pass (value, autoregressive_value)
    autoregressive_future: bool = False  # predict: s' from a world-model pass conditioned on the sampled action
    autoregressive_value: bool = False  # predict / imagine: V from a value pass conditioned on [s, a, s']
    image_size: int = 224  # model input side in pixels (latent side = image_size / 8)
    jpeg_roundtrip: bool = True  # JPEG q95 round trip of every camera image; make_cosmos: off for ALOHA, as the reference
    center_crop: bool = True  # 90%-area centre crop (checkpoints trained with random resized crops)
    return_future_images: bool = False  # VAE-decode the predicted future camera images
    return_latents: bool = False  # predict: attach the latent sample (imagine always does, for value())
    pad_to: int = 0  # run batches at exactly this size (0: as given)
    encode_rows: int = 0  # most rows per VAE encode call (0: the whole batch; 1: batch-invariant encodes)
    vae_encode: str = "needed"  # "needed": encode only the latent frames the DiT reads (exact; causal_encode.py) | "full"
    profile: bool = False  # synchronise the GPU between phases for a true per-phase time split
    network_batch: int = 64  # most rows per DiT call when pad_to is 0 (a planning stage can hold 120)


class CosmosPolicy:
    """Cosmos Policy on one device; implements the Policy contract plus `imagine` and `value`.

    camera_keys: camera role of the layout -> Observation.images key.
    image_threads: the image-preparation thread pool (with_settings forms share their parent's).
    embeddings: instruction embeddings (EmbeddingTable, or PseudoEmbeddings with random weights).
    request_preparer: the camera-image work per observation (torch-free), for clients to run.
    """

    per_request_steps = True  # imagine/value take num_steps per request (planners batch whole ensembles)

    def __init__(
        self,
        network: CosmosNetwork,
        layout: LatentLayout,
        stats: DatasetStats,
        embeddings: EmbeddingTable | PseudoEmbeddings,
        settings: InferenceSettings,
        camera_keys: Mapping[str, str],
        image_threads: ThreadPoolExecutor | None = None,
    ):
        self.network = network
        self.layout = layout
        self.stats = stats
        self.embeddings = embeddings
        self.settings = settings
        self.camera_keys = dict(camera_keys)
        self.chunk_size = layout.chunk_size
        side = settings.image_size // VAE_SPATIAL_FACTOR
        self.frame_shape = (LATENT_CHANNELS, side, side)
        self.latent_shape = (LATENT_CHANNELS, layout.num_frames, side, side)
        self._future_slots = [i for i, slot in enumerate(layout.slots) if slot.future]
        self._placeholder_slots = [i for i, slot in enumerate(layout.slots) if slot.kind is not SlotKind.IMAGE]
        self._constant_prefix = min(i for i, slot in enumerate(layout.slots) if slot.kind is SlotKind.IMAGE)
        # shared by every with_settings form of this policy (one pool per network, not per form)
        self._image_threads = image_threads or ThreadPoolExecutor(max_workers=IMAGE_THREADS,
                                                                  thread_name_prefix="cosmos-images")
        self.request_preparer = CameraPreparer(
            cameras=tuple((role, self.camera_keys[role]) for role in layout.cameras),
            size=settings.image_size,
            jpeg_roundtrip=settings.jpeg_roundtrip,
            center_crop=settings.center_crop,
        )

    def reset(self) -> None:
        """No per-episode memory."""

    def with_settings(self, **changes: object) -> CosmosPolicy:
        """The same network (shared, not copied) with some InferenceSettings changed, e.g. pad_to=8."""
        settings = replace(self.settings, **changes)
        return CosmosPolicy(self.network, self.layout, self.stats, self.embeddings, settings, self.camera_keys,
                            self._image_threads)

    def batch_invariant(self, rows: int) -> CosmosPolicy:
        """This policy in a form whose per-request results are bitwise independent of batch-mates and batch
        size. On CUDA: the DiT's Linear layers through one fixed-tiling GEMM (invariant_matmul.py, shared
        with this policy: call before the first compiled call), a whole-graph compile replaced by
        per-block compiles, and one VAE encode per row, batches as they come. On the CPU, whose kernels are invariant at a fixed shape: every call on `rows` rows."""
        if self.network.device.type != "cuda":
            return self.with_settings(pad_to=int(rows))
        from robofleet.platform.errors import SpecError
        from robofleet.policies.cosmos.fp8 import Fp8Linear
        from robofleet.policies.cosmos.invariant_matmul import make_batch_invariant

        if any(isinstance(m, Fp8Linear) for m in self.network.transformer.modules()):
            raise SpecError("serving.deterministic", "an FP8 DiT (dit_precision = \"fp8\") has no batch-invariant "
                            "form: serve it with deterministic = false, or use dit_precision = \"bf16\"")
        if self.network.compiled[0] == "full":
            # The whole-graph compile (CUDA graphs per batch size) left 1 of 100 requests different on an
            # H200 even with the invariant GEMM; per-block compiles left none (BENCHMARKS.md).
            logging.getLogger(__name__).info("cosmos: batch-invariant form: the DiT's blocks are compiled "
                                             "(\"blocks\", \"default\") instead of the whole graph")
            self.network.recompile("blocks", "default")
        make_batch_invariant(self.network.transformer)
        return self.with_settings(pad_to=0, encode_rows=1)

    def warm_up(self, batch_sizes: Sequence[int] | None = None) -> float:
        """Run the compiled parts (DiT, VAE encode) on every batch shape this policy will see; returns seconds.

        A compiled DiT compiles on its first call (static shapes) and on the first call with another
        batch size (a dynamic batch dimension that then serves every size); with CUDA graphs
        ("reduce-overhead"), each new batch size is also recorded once, on its second call. A compiled
        VAE encode likewise (a static graph, then a dynamic-batch one). Doing it here puts that time into the
        policy's load time, not into the first episodes.
        batch_sizes: default (1, 2) (the two compiles); a replica passes every size up to its max_batch.
        With pad_to set, (pad_to,) whatever is given: that is the only shape the network sees. Each size runs twice (warm-up, then CUDA-graph recording).
        With nothing compiled (eager DiT and VAE) there is nothing to warm up: returns 0 at once.
        """
        began = time.perf_counter()
        dit, vae = self.network.compiled[0] != "none", self.network.vae_compiled is not None
        if not (dit or vae):
            return 0.0
        if self.settings.pad_to:  # every call runs on pad_to rows, whatever the batch
            batch_sizes = (self.settings.pad_to,)
        elif batch_sizes is None:
            batch_sizes = (1, 2)
        needed = self._frames_to_encode(Mode.POLICY, False)
        encodes = vae and needed < self.layout.num_frames
        side = self.settings.image_size
        for batch in batch_sizes:
            inputs = self.random_dit_inputs(batch)
            black = torch.full((batch, 3, pixel_frames(self.layout.num_frames), side, side), -1.0,
                               dtype=self.network.dtype, device=self.network.device) if encodes else None
            for _ in range(2):
                if dit:
                    self.network(*inputs)
                if encodes:
                    self.network.encode_leading(black, needed, self._constant_prefix)
        if self.network.device.type == "cuda":
            torch.cuda.synchronize(self.network.device)
        return time.perf_counter() - began

    def random_dit_inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random inputs of one DiT evaluation in policy mode, seeded by `batch` (warm-up, benchmarks).

        Returns x_in (B, 16, T, h, w), c_noise (B, T) (0.5 on generated frames), condition (B, T), text (B, L, D).
        """
        device = self.network.device
        generator = torch.Generator().manual_seed(batch)
        x_in = torch.randn((batch, *self.latent_shape), generator=generator).to(device)
        text = torch.randn((batch, *self.embeddings.shape[-2:]), generator=generator).to(device)
        condition = torch.tensor(self.layout.conditioning_mask(Mode.POLICY), dtype=torch.float32, device=device)
        condition = condition.expand(batch, self.layout.num_frames)
        return x_in, (1.0 - condition) * 0.5, condition, text

    # -- public queries ------------------------------------------------------------------------
    def predict(self, observations: Sequence[Observation], seeds: Sequence[int]) -> list[Prediction]:
        """Policy mode [s] -> [a, s', V].

        Returns per request: actions float32 (K, d_act) in env units, future_proprio float32 (P,),
        future_images (camera key -> uint8 (S, S, 3), only with return_future_images), value in
        [0, 1], latents (only with return_latents) and stats (seed, batch size, network
        evaluations, seconds per phase).
        """
        steps = self.settings.action_steps
        steps += self.settings.future_steps if self.settings.autoregressive_future else 0
        steps += self.settings.value_steps if self.settings.autoregressive_value else 0

        def run(batch: list[int], timer: PhaseTimer) -> list[CosmosPrediction]:
            obs = [observations[i] for i in batch]
            request_seeds = [seeds[i] for i in batch]
            clean, placeholders = self._clean_latents(obs, timer, Mode.POLICY)
            with timer.phase("preprocess"):
                text = self._text(obs)
            with timer.phase("dit"):
                drawn = self._sample(clean, self._mask(Mode.POLICY), text, request_seeds, self.settings.action_steps)
                future = drawn
                if self.settings.autoregressive_future:
                    future = self._sample(drawn, self._mask(Mode.WORLD_MODEL), text, request_seeds,
                                          self.settings.future_steps)
                scored = future
                if self.settings.autoregressive_value:
                    scored = self._sample(future, self._mask(Mode.VALUE), text, request_seeds, self.settings.value_steps)
            with timer.phase("postprocess"):
                actions = self._read_actions(drawn)
            return self._outputs(actions, future, scored, placeholders, timer, self.settings.return_latents)

        return self._in_batches(run, len(observations), seeds, [steps] * len(observations))

    def imagine(
        self,
        observations: Sequence[Observation],
        actions: Sequence[np.ndarray | CosmosPrediction],
        seeds: Sequence[int],
        num_steps: int | Sequence[int] | None = None,
    ) -> list[Prediction]:
        """World-model mode [s, a] -> [s', V].

        actions[i]: an action chunk (K, d_act, env units), injected into the latents of the encoded
            observation; or a proposal CosmosPrediction carrying its latent sample, which then
            conditions as it is (the reference's path: no VAE encode, the raw sampled action frame).
            All requests of a call take the same kind.
        num_steps: network evaluations of this pass, one count for all or one per request
            (planners' ensembles use 1/3/5); None = future_steps.
        Returns CosmosPredictions whose `actions` are the given chunks, with future state and value
        as in `predict`, and always their latents (for `value`).
        """
        count = len(observations)
        future_steps = self._steps(num_steps, count, self.settings.future_steps)
        extra = self.settings.value_steps if self.settings.autoregressive_value else 0
        samples = self._given_latents(actions, "actions")

        def run(batch: list[int], timer: PhaseTimer) -> list[CosmosPrediction]:
            obs = [observations[i] for i in batch]
            request_seeds = [seeds[i] for i in batch]
            if samples is None:
                chunks = np.stack([self._check_actions(actions[i]) for i in batch])
                clean, placeholders = self._clean_latents(obs, timer, Mode.WORLD_MODEL, actions=chunks)
            else:
                chunks = np.stack([self._check_actions(actions[i].actions) for i in batch])
                clean, placeholders = self._sample_latents(samples, batch, obs, timer)
            with timer.phase("preprocess"):
                text = self._text(obs)
            with timer.phase("dit"):
                future = self._sample(clean, self._mask(Mode.WORLD_MODEL), text, request_seeds,
                                      [future_steps[i] for i in batch])
                scored = future
                if self.settings.autoregressive_value:
                    scored = self._sample(future, self._mask(Mode.VALUE), text, request_seeds, self.settings.value_steps)
            return self._outputs(chunks.astype(np.float32), future, scored, placeholders, timer, keep_latents=True)

        whole = samples is not None and not self.settings.return_future_images
        return self._in_batches(run, count, seeds, [n + extra for n in future_steps], whole=whole)

    def value(
        self,
        observations: Sequence[Observation],
        actions: Sequence[np.ndarray],
        future: Sequence[Prediction],
        seeds: Sequence[int],
        num_steps: int | Sequence[int] | None = None,
        mask_current_state_action: bool = False,
    ) -> list[float]:
        """Value mode [s, a, s'] -> V in [0, 1], with `num_steps` (default `value_steps`; one count or one
        per request) network evaluations.

        future[i]: the predicted next state. A CosmosPrediction's latents condition as they are, every
        frame but the value frame (the reference's planning path: its current state and action are
        the ones the earlier passes saw; observations[i] gives the instruction, actions[i] is only
        shape-checked). Otherwise its future_proprio and future_images (every camera, keyed like
        Observation.images and prepared like camera images) are injected beside the encoded
        observation and the injected chunk.
        mask_current_state_action: the current proprio, current images and action frames are not
            given but generated (NVIDIA's `mask_current_state_action_for_value_prediction`, V(s')).
        """
        count = len(observations)
        value_steps = self._steps(num_steps, count, self.settings.value_steps)
        condition = self._mask(Mode.VALUE, mask_current_state_action)
        samples = self._given_latents(future, "future")

        def run(batch: list[int], timer: PhaseTimer) -> list[float]:
            obs = [observations[i] for i in batch]
            chunks = np.stack([self._check_actions(actions[i]) for i in batch])
            states = [future[i] for i in batch]
            if samples is not None:
                clean, _ = self._sample_latents(samples, batch, obs, timer, encode=False)
            else:
                given = [s.latents if isinstance(s, CosmosPrediction) else None for s in states]
                for state, latents in zip(states, given):
                    if latents is None and (state.future_proprio is None or state.future_images is None):
                        raise ValueError("value() needs future latents (a CosmosPrediction) or future_proprio and "
                                         "future_images")
                clean, _ = self._clean_latents(
                    obs,
                    timer,
                    Mode.VALUE,
                    actions=chunks,
                    future_proprio=[s.future_proprio if z is None else None for s, z in zip(states, given)],
                    future_images=[s.future_images if z is None else None for s, z in zip(states, given)],
                )
                for row, latents in enumerate(given):
                    if latents is not None:
                        clean[row] = self._latents_tensor(latents, clean.device)
            with timer.phase("preprocess"):
                text = self._text(obs)
            with timer.phase("dit"):
                scored = self._sample(clean, condition, text, [seeds[i] for i in batch], [value_steps[i] for i in batch])
            return read_value(scored[:, :, self.layout.index(VALUE)]).tolist()

        return self._in_batches(run, count, seeds, value_steps, whole=samples is not None)

    # -- planning inputs -----------------------------------------------------------------------
    def _steps(self, num_steps: int | Sequence[int] | None, count: int, default: int) -> list[int]:
        """One network-evaluation count per request, None meaning `default` (ValueError on a count < 1 or a
        length mismatch)."""
        if num_steps is None:
            steps = [default] * count
        elif isinstance(num_steps, (int, np.integer)):
            steps = [int(num_steps)] * count
        else:
            steps = [default if n is None else int(n) for n in num_steps]
            if len(steps) != count:
                raise ValueError(f"{count} requests but {len(steps)} step counts")
        if any(n < 1 for n in steps):
            raise ValueError(f"step counts must be >= 1, got {sorted(set(steps))}")
        return steps

    def _given_latents(self, items: Sequence[object], what: str) -> list[np.ndarray] | None:
        """The latent samples the requests carry (CosmosPredictions with latents), or None if none does.

        A call mixing requests with and without latents is refused for `actions` (two conditioning
        paths in one batch); for `future` the requests without latents take the encode path (value()).
        """
        latents = [item.latents if isinstance(item, CosmosPrediction) else None for item in items]
        present = [z is not None for z in latents]
        if not any(present):
            return None
        if not all(present):
            if what == "future":
                return None
            raise ValueError(f"{what}: either every request carries its latent sample or none does")
        for z in latents:
            if z.shape != self.latent_shape:
                raise ValueError(f"{what} latents {z.shape} do not match this policy's {self.latent_shape}")
        return latents

    def _latents_tensor(self, latents: np.ndarray, device: torch.device) -> torch.Tensor:
        if latents.shape != self.latent_shape:
            raise ValueError(f"future latents {latents.shape} do not match this policy's {self.latent_shape}")
        return torch.from_numpy(np.ascontiguousarray(latents, dtype=np.float32)).to(device)

    def _sample_latents(self, samples: list[np.ndarray], batch: list[int], observations: Sequence[Observation],
                        timer: PhaseTimer, encode: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(clean, placeholders): the given samples of `batch` as clean latents (B, 16, T, h, w).

        Placeholders (the VAE latents of the pixel video) are needed only to decode future images;
        then, and only then, the observations are encoded.
        """
        with timer.phase("preprocess"):
            clean = torch.from_numpy(np.stack([np.asarray(samples[i], dtype=np.float32) for i in batch]))
            clean = clean.to(self.network.device)
        placeholders = None
        if encode and self.settings.return_future_images:
            _, placeholders = self._clean_latents(observations, timer, Mode.WORLD_MODEL)
        return clean, placeholders

    # -- batching ------------------------------------------------------------------------------
    def _encode_in_rows(self, encode: Callable[[torch.Tensor], torch.Tensor], video: torch.Tensor) -> torch.Tensor:
        """`encode` (a VAE encode) on at most `encode_rows` rows of `video` at a time (0: all at once)."""
        rows = self.settings.encode_rows
        if not rows or video.shape[0] <= rows:
            return encode(video)
        return torch.cat([encode(video[start:start + rows]) for start in range(0, video.shape[0], rows)])

    def _in_batches(
        self,
        run: Callable[[list[int], PhaseTimer], list[T]],
        count: int,
        seeds: Sequence[int],
        evaluations: Sequence[int],
        whole: bool = False,
    ) -> list[T]:
        """Call `run` on index batches (padded to `pad_to`) and attach stats to Predictions.

        evaluations: network evaluations per request (for the stats).
        whole: one batch of every request, unpadded (no VAE work: the DiT calls pad themselves).
        """
        if len(seeds) != count:
            raise ValueError(f"{count} observations but {len(seeds)} seeds")
        size = count if whole else (self.settings.pad_to or count)
        results: list[T] = []
        for start in range(0, count, max(size, 1)):
            batch = list(range(start, min(start + size, count)))
            padded = batch + [batch[0]] * (size - len(batch))
            timer = PhaseTimer(self.network.device, synchronize=self.settings.profile)
            began = time.perf_counter()
            outputs = run(padded, timer)[: len(batch)]
            stats = {
                "batch_size": len(padded),
                "seconds": time.perf_counter() - began,
                **{f"seconds_{name}": value for name, value in timer.seconds.items()},
                **{f"gpu_seconds_{name}": value for name, value in timer.gpu_seconds().items()},
            }
            for index, output in zip(batch, outputs):
                if isinstance(output, CosmosPrediction):
                    output = replace(output, stats={"seed": int(seeds[index]),
                                                    "network_evaluations": int(evaluations[index]), **stats})
                results.append(output)
        return results

    # -- building the clean latent sequence ----------------------------------------------------
    def _clean_latents(
        self,
        observations: Sequence[Observation],
        timer: PhaseTimer,
        mode: Mode,
        actions: np.ndarray | None = None,
        future_proprio: Sequence[np.ndarray | None] | None = None,
        future_images: Sequence[Mapping[str, np.ndarray] | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the queries and inject their vectors.

        mode: the inference mode the latents are for (which frames the DiT will read).
        actions: (B, K, d_act) env units, injected into the action frame when given.
        Returns (clean, placeholders), both (B, 16, T, h, w) float32: placeholders are the VAE latents
        of the pixel video (black frames behind non-image slots), clean has the vectors injected.
        With vae_encode = "needed", frames the DiT never reads are zeros in both (see _frames_to_encode).
        """
        batch = len(observations)
        futures_given = any(images is not None for images in future_images or [])
        needed = self._frames_to_encode(mode, futures_given)
        # Every row is encoded, repeats included: encoding a repeated observation once would change the VAE's
        # batch size with the batch's composition (replicas pad with copies of the first request), and a
        # request's numbers must not depend on its batch-mates.
        distinct, rows = list(observations), list(range(batch))
        with timer.phase("preprocess"):
            current = list(self._image_threads.map(self._current_images, distinct))
            later = [None if images is None else self._camera_images(images)
                     for images in (future_images or [None] * len(distinct))]
            frames = slot_frames(self.layout, current, later, self.settings.image_size, count=needed)
            video = frames_to_video(torch.from_numpy(frames).to(self.network.device), self.network.dtype)
            proprio = np.stack([self._check_proprio(obs.proprio) for obs in observations])
        with timer.phase("vae_encode"):
            if needed == self.layout.num_frames:
                placeholders = self._encode_in_rows(self.network.encode, video)
            else:
                leading = self._encode_in_rows(
                    lambda part: self.network.encode_leading(part, needed, self._constant_prefix), video)
                placeholders = torch.zeros((len(distinct), *self.latent_shape), dtype=torch.float32,
                                           device=leading.device)
                placeholders[:, :, :needed] = leading
            if len(distinct) != batch:
                placeholders = placeholders.index_select(0, torch.tensor(rows, device=placeholders.device))
        with timer.phase("preprocess"):
            clean = placeholders.clone()
            self._inject(clean, PROPRIO, normalize(proprio, self.stats.proprio_min, self.stats.proprio_max))
            if actions is not None:
                flat = normalize(actions, self.stats.actions_min, self.stats.actions_max).reshape(batch, -1)
                self._inject(clean, ACTION, flat)
            for row, vector in enumerate(future_proprio or []):
                if vector is not None:
                    scaled = normalize(self._check_proprio(vector), self.stats.proprio_min, self.stats.proprio_max)
                    self._inject(clean, FUTURE_PROPRIO, scaled[None], rows=[row])
        return clean, placeholders

    def _frames_to_encode(self, mode: Mode, future_images_given: bool) -> int:
        """How many leading latent frames to VAE-encode for a batch in `mode`.

        The DiT reads the clean latents only on the mode's conditioning frames; of those, proprio,
        action and value frames are overwritten by injected vectors and future frames by given
        latents (value mode) unless future images are given. The causal VAE makes the leading
        frames independent of later ones, so encoding up to the last frame read changes nothing.
        Decoding future images needs every placeholder latent: then all frames are encoded.
        """
        if self.settings.vae_encode == "full" or self.settings.return_future_images:
            return self.layout.num_frames
        read = [
            index
            for index in self.layout.conditioning[mode]
            if self.layout.slots[index].kind in (SlotKind.BLANK, SlotKind.IMAGE)
            and (not self.layout.slots[index].future or future_images_given)
        ]
        return max(max(read), self._constant_prefix) + 1

    def _inject(self, latents: torch.Tensor, slot: Slot, vectors: np.ndarray, rows: list[int] | None = None) -> None:
        """Overwrite `slot`'s frame of latents (B, 16, T, h, w) with vectors (B or len(rows), n) tiled."""
        values = torch.as_tensor(vectors, dtype=torch.float32, device=latents.device)
        index = self.layout.index(slot)
        target = slice(None) if rows is None else rows
        latents[target, :, index] = tile_into_frame(values, self.frame_shape)

    def _current_images(self, obs: Observation) -> dict[str, np.ndarray]:
        """Camera role -> prepared uint8 (S, S, 3) of `obs`, prepared here unless a client did it."""
        if isinstance(obs, PreparedObservation):
            self.request_preparer.check(obs)
            return dict(obs.images)
        return self._camera_images(obs.images)

    def _camera_images(self, images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Camera key -> raw uint8 (H, W, 3) -> camera role -> prepared uint8 (S, S, 3)."""
        return self.request_preparer.images(images)

    def _check_proprio(self, proprio: np.ndarray) -> np.ndarray:
        vector = np.asarray(proprio, dtype=np.float64)
        if vector.shape != (self.stats.proprio_dim,):
            raise ValueError(f"proprio has shape {vector.shape}, expected ({self.stats.proprio_dim},)")
        return vector

    def _check_actions(self, chunk: np.ndarray) -> np.ndarray:
        array = np.asarray(chunk, dtype=np.float64)
        expected = (self.layout.chunk_size, self.stats.action_dim)
        if array.shape != expected:
            raise ValueError(f"action chunk has shape {array.shape}, expected {expected}")
        return array

    def _text(self, observations: Sequence[Observation]) -> torch.Tensor:
        return self.embeddings.lookup([obs.instruction for obs in observations]).to(self.network.device)

    # -- sampling and reading back --------------------------------------------------------------
    def _mask(self, mode: Mode, mask_current_state_action: bool = False) -> tuple[bool, ...]:
        """(T,) conditioning frames of `mode`; with mask_current_state_action (value mode) the current
        proprio, current images and action frames are generated instead (NVIDIA's policy_video2world_model
        `get_x0_fn_from_batch` zeroes their condition mask; the blank and future frames stay given)."""
        mask = list(self.layout.conditioning_mask(mode))
        if mask_current_state_action:
            for index, slot in enumerate(self.layout.slots):
                if slot.kind in (SlotKind.PROPRIO, SlotKind.IMAGE, SlotKind.ACTION) and not slot.future:
                    mask[index] = False
        return tuple(mask)

    def _sample(self, clean: torch.Tensor, condition: Sequence[bool], text: torch.Tensor, seeds: Sequence[int],
                steps: int | Sequence[int]) -> torch.Tensor:
        """Denoise the frames `condition` (T,) does not give, `steps` evaluations (one or per row).

        Returns (B, 16, T, h, w) float32.
        """
        batch = clean.shape[0]
        per_row = [int(steps)] * batch if isinstance(steps, (int, np.integer)) else [int(n) for n in steps]
        pad_to = self.settings.pad_to
        denoiser = ConditionedDenoiser(self.network, clean, torch.tensor(tuple(condition)), text,
                                       chunk=pad_to or self.settings.network_batch, pad_chunks=pad_to > 0)
        noise = initial_noise(seeds, self.latent_shape).to(clean.device)
        return sample_rows(denoiser, noise, per_row).float()

    def _read_actions(self, drawn: torch.Tensor) -> np.ndarray:
        """(B, K, d_act) float32 in env units from the action frame."""
        length = self.layout.chunk_size * self.stats.action_dim
        flat = average_copies(drawn[:, :, self.layout.index(ACTION)], length).cpu().numpy()
        chunks = flat.reshape(-1, self.layout.chunk_size, self.stats.action_dim)
        return unnormalize(chunks, self.stats.actions_min, self.stats.actions_max).astype(np.float32)

    def _outputs(
        self,
        actions: np.ndarray,
        future: torch.Tensor,
        scored: torch.Tensor,
        placeholders: torch.Tensor,
        timer: PhaseTimer,
        keep_latents: bool,
    ) -> list[CosmosPrediction]:
        images: list[dict[str, np.ndarray] | None] = [None] * len(actions)
        if self.settings.return_future_images:
            with timer.phase("vae_decode"):
                images = self._decode_future_images(future, placeholders)
        with timer.phase("postprocess"):
            proprio = average_copies(future[:, :, self.layout.index(FUTURE_PROPRIO)], self.stats.proprio_dim)
            proprio_env = unnormalize(proprio.cpu().numpy(), self.stats.proprio_min, self.stats.proprio_max)
            values = read_value(scored[:, :, self.layout.index(VALUE)]).tolist()
            latents = scored.cpu().numpy() if keep_latents else None
        return [
            CosmosPrediction(
                actions=actions[b],
                future_proprio=proprio_env[b].astype(np.float32),
                future_images=images[b],
                value=float(values[b]),
                latents=None if latents is None else latents[b],
            )
            for b in range(len(actions))
        ]

    def _decode_future_images(self, future: torch.Tensor, placeholders: torch.Tensor) -> list[dict[str, np.ndarray]]:
        """Camera key -> uint8 (S, S, 3) per request, decoded from the future image frames.

        The injected (non-image) frames go back to their placeholder latents first, as in the
        reference: decoding injected vectors would smear artefacts into the images. The VAE is
        causal, so decoding only up to the last future image frame gives the same pictures.
        """
        latents = future.clone()
        latents[:, :, self._placeholder_slots] = placeholders[:, :, self._placeholder_slots]
        slots = self.layout.image_slots(future=True)
        video = self.network.decode(latents[:, :, : max(slots) + 1])
        pictures = {index: video_to_uint8(video[:, :, pixel_frame(index)]) for index in slots}
        return [
            {self.camera_keys[str(self.layout.slots[index].camera)]: pictures[index][b] for index in slots}
            for b in range(future.shape[0])
        ]
