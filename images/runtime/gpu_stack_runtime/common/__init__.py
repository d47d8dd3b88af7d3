"""Code shared with the controller, byte for byte (see each module's docstring).

``contract`` (volume layout, marker, environment names, exit codes), ``errors`` (the one
error hierarchy), ``retry`` (the one backoff) and ``wait`` (the one wait helper) are
copies of ``plugins/module_utils/common/<name>.py``; ``tests/unit/shared`` fails on any
byte of drift. Edit the collection's file and copy it here.
"""
