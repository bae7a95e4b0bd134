"""HPM-KD knowledge distillation on Ray: small students trained on real soft targets from a teacher.

Entry point: :class:`hpm_ray.distill.auto.AutoDistiller` (imported lazily: it pulls in Ray and the boosters).
"""
