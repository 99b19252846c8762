import os

import torch

# without a GPU the Triton kernels run in the interpreter; this must happen before triton is
# imported anywhere
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
