"""The competition's data contract (../shared/CONTRACT.md), as constants.

Every other module takes column names, sizes and the warm-up rule from here.
"""

SEQ_LEN = 1000          # every sequence has exactly this many steps
WARMUP = 99             # steps 0..98 have need_prediction == False
N_FEATURES = 32
N_TARGETS = 2

PRICE_COLS = [f"p{i}" for i in range(12)]    # p0..p5 bids, p6..p11 asks
VOLUME_COLS = [f"v{i}" for i in range(12)]
TRADE_PRICE_COLS = [f"dp{i}" for i in range(4)]
TRADE_VOLUME_COLS = [f"dv{i}" for i in range(4)]
FEATURE_COLS = PRICE_COLS + VOLUME_COLS + TRADE_PRICE_COLS + TRADE_VOLUME_COLS
TARGET_COLS = ["t0", "t1"]
ID_COLS = ["seq_ix", "step_in_seq", "need_prediction"]
ALL_COLS = ID_COLS + FEATURE_COLS + TARGET_COLS   # the 37 columns, in file order

# Index ranges inside the 32-wide state vector.
BID_PRICE = slice(0, 6)
ASK_PRICE = slice(6, 12)
BID_VOL = slice(12, 18)
ASK_VOL = slice(18, 24)
TRADE_PRICE = slice(24, 28)
TRADE_VOL = slice(28, 32)

CLIP = 6.0              # predictions are clipped to [-CLIP, CLIP] by the metric
WEIGHT_FLOOR = 1e-8     # metric weights are max(|y_true|, WEIGHT_FLOOR)

assert len(FEATURE_COLS) == N_FEATURES and len(ALL_COLS) == 37
