"""Suite-wide settings: nothing may wait on the network, and DVC sends no analytics."""

import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

pytest_plugins = ["tests.s3server"]  # the loopback S3 server fixtures (`s3`, `s3_server`)
