"""Score a GluonTS DeepAR checkpoint on M1 yearly (run_deepar.py's harness): the GluonTS run of RESULTS_DEEPAR.md was
stopped at epoch 69 of 100 by the deadline, and its last checkpoint (Lightning's, the lowest training loss) scored.

    python benchmarks/deepar_gluonts_checkpoint.py PATH/checkpoints/epoch=69-step=3500.ckpt
"""
import sys, json, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, "benchmarks")
import numpy as np
import run_deepar as r
from gluonts.dataset.common import ListDataset
from gluonts.torch.model.deepar import DeepAREstimator
from gluonts.torch.model.deepar.lightning_module import DeepARLightningModule
series = r.load("m1_yearly")
h, m = 6, 1
history = ListDataset([{"start": s["start"], "target": s["target"][:-h]} for s in series], freq="Y")
est = DeepAREstimator(freq="Y", prediction_length=h, context_length=6)
import torch
module = est.create_lightning_module()
module.load_state_dict(torch.load(sys.argv[1], weights_only=False, map_location="cpu")["state_dict"])
predictor = est.create_predictor(est.create_transformation(), module)
fc = list(predictor.predict(history, num_samples=200))
mean = np.array([f.mean for f in fc]); quant = np.array([[f.quantile(q) for q in r.QUANTILES] for f in fc])
print(json.dumps({"m1_yearly": {"gluonts_deepar_checkpoint_epoch69_step3500": r.scores(series, h, m, mean, quant)}}))
