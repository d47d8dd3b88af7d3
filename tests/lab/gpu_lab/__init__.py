"""The local lab of llmops.gpu_stack.

``gpu_lab.apiserver`` is a Kubernetes-compatible API server (the lab's OpenShift),
``gpu_lab.controllers`` the small controllers that play OLM, NFD, the GPU Operator,
KubeRay and the kubelet, ``gpu_lab.cli`` the ``gpu-lab`` command.
"""
