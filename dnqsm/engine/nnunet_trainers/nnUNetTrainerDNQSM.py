"""dnqsm's nnU-Net trainer: nnU-Net's own training, plus intensity augmentation for QSM's many looks.

QSM maps of the same nucleus differ between sites by reconstruction (contrast scaled, blurred or
sharpened, streaks), referencing (offsets), noise and slice thickness. On top of nnU-Net's default
augmentation this trainer adds, after the spatial transforms and before mirroring:

- contrast scaling (x0.5-1.6) and brightness (x0.6-1.5), so a low-contrast child or a
  non-rescaled TKD map is not "another tissue";
- gamma (0.6-1.7), also on the inverted image;
- Gaussian blur (sigma 0.5-1.5 voxels, per axis), as L2-regularised inversions blur;
- Gaussian noise (variance up to 0.15);
- low-resolution simulation per axis (down to 0.3 of the resolution, axes drawn independently), as
  thick clinical slices in any direction look.

It is found the nnU-Net way: ``dnqsm.engine.nnunet.register_trainers`` puts this folder on
``nnUNet_extTrainer``, which nnU-Net searches for trainer classes in training and inference. The
network architecture is nnU-Net's, unchanged, so the trained models also run where only the name
of this class is resolvable.
"""

from __future__ import annotations

from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: The added transforms and their probabilities (also written to the provenance record).
QSM_AUGMENTATION = {
    "contrast": {"range": (0.5, 1.6), "p": 0.3},
    "brightness": {"range": (0.6, 1.5), "p": 0.3},
    "gamma": {"range": (0.6, 1.7), "p": 0.3, "p_invert": 0.15},
    "blur": {"sigma_voxels": (0.5, 1.5), "p": 0.25},
    "noise": {"variance": (0.0, 0.15), "p": 0.2},
    "low_resolution": {"scale": (0.3, 1.0), "p": 0.35},
}


def qsm_intensity_transforms() -> list:
    """The extra intensity transforms, as batchgeneratorsv2 RandomTransforms."""
    a = QSM_AUGMENTATION
    return [
        RandomTransform(
            ContrastTransform(
                contrast_range=BGContrast(a["contrast"]["range"]),
                preserve_range=False,
                synchronize_channels=False,
                p_per_channel=1,
            ),
            apply_probability=a["contrast"]["p"],
        ),
        RandomTransform(
            MultiplicativeBrightnessTransform(
                multiplier_range=BGContrast(a["brightness"]["range"]), synchronize_channels=False, p_per_channel=1
            ),
            apply_probability=a["brightness"]["p"],
        ),
        RandomTransform(
            GammaTransform(
                gamma=BGContrast(a["gamma"]["range"]),
                p_invert_image=a["gamma"]["p_invert"],
                synchronize_channels=False,
                p_per_channel=1,
                p_retain_stats=1,
            ),
            apply_probability=a["gamma"]["p"],
        ),
        RandomTransform(
            GaussianBlurTransform(
                blur_sigma=a["blur"]["sigma_voxels"],
                synchronize_channels=False,
                synchronize_axes=False,
                p_per_channel=1,
                benchmark=False,
            ),
            apply_probability=a["blur"]["p"],
        ),
        RandomTransform(
            GaussianNoiseTransform(noise_variance=a["noise"]["variance"], p_per_channel=1, synchronize_channels=True),
            apply_probability=a["noise"]["p"],
        ),
        RandomTransform(
            SimulateLowResolutionTransform(
                scale=a["low_resolution"]["scale"],
                synchronize_channels=False,
                synchronize_axes=False,
                ignore_axes=None,
                allowed_channels=None,
                p_per_channel=1,
            ),
            apply_probability=a["low_resolution"]["p"],
        ),
    ]


class nnUNetTrainerDNQSM(nnUNetTrainer):
    """nnUNetTrainer with the QSM intensity augmentation above; everything else is nnU-Net's."""

    @staticmethod
    def get_training_transforms(*args, **kwargs):
        pipeline = nnUNetTrainer.get_training_transforms(*args, **kwargs)
        transforms = pipeline.transforms
        at = next((i for i, t in enumerate(transforms) if isinstance(t, MirrorTransform)), None)
        if at is None:  # no mirroring configured: insert before nnU-Net's masking and label clean-up
            at = next(
                i for i, t in enumerate(transforms) if type(t).__name__ in ("MaskImageTransform", "RemoveLabelTansform")
            )
        transforms[at:at] = qsm_intensity_transforms()
        return pipeline
