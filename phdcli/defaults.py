"""Default values shared by the library and the CLI (no imports: --help stays fast)."""

K = 5
SEGMENT_LENGTH_S = 5.0  # the paper's test protocol
GIF_FPS = 10.0
GIF_WIDTH = 480
NAME_TEMPLATE = "{stem}_{rank:02d}_{start:.0f}s"
