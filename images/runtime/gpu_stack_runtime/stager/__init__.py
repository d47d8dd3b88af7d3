"""gpu-stack-stage: stage model weights onto a shared volume.

Resumable, verified (per-file digests), published atomically (one rename), idempotent
(a completion marker makes a rerun a no-op). Sources: Hugging Face Hub, S3-compatible
object storage, HTTP(S) files or archives, and files uploaded into the staging area.
"""
