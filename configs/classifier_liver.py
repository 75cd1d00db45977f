"""ResNet-style classifier on the liver-lesion phantoms: cyst / metastasis / hemangioma.

Run:  jaxmedgan train --config configs/classifier_liver.py --workdir runs/classifier_liver
Expect: about 1.5-3 minutes on 2 CPU cores (400 steps of batch 32 at 64 px); on the 90 held-out
phantom lesions we measured `eval/accuracy` 0.867 and macro AUC 0.987 (per class 0.97-0.995).
The workdir then serves `models.trained_classifier.load_classifier` (clinical loss, features).
This file is also the base of the downstream study's classifier (configs/downstream_liver.py).
"""
import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trainer = "classifier"  # jaxmedgan.trainers registry key

    c.mesh = common.mesh()

    c.data = common.data("phantom-liver", 64, holdout_fraction=0.0)  # shared keys: configs/common.py
    c.data.labels_csv = ""  # labels-csv source: file,label[,group] (train / cross-validation set)
    c.data.test_labels_csv = ""  # labels-csv source: held-out set ("" = none)
    c.data.class_names = ()  # labels-csv source: class (or finding) names in logit order
    c.data.multi_label = False  # True: '|'-separated findings per image, sigmoid BCE (chest X-rays)
    c.data.relabel = ""  # merge classes, e.g. "normal:normal;abnormal:fracture,lytic,sclerotic"
    c.data.counts = ()  # phantom-liver train lesions per class; () = the study's 53 / 64 / 65
    c.data.test_counts = ()  # phantom-liver held-out lesions per class; () = 30 / 30 / 30
    c.data.flip = True  # off for images whose left/right carries meaning (whole chest X-rays)
    c.data.rotate90 = True
    c.data.max_translate_px = 4

    c.model = ml_collections.ConfigDict()
    c.model.arch = "resnet"  # resnet (models/resnet_classifier.py) | cnn (models/classifier.py, clinical loss)
    c.model.num_classes = 3  # classes (single-label) or findings (multi-label)
    c.model.features = (16, 32, 64)  # channels per stage; resnet: stages after the first halve H and W
    c.model.blocks_per_stage = 1  # resnet: basic residual blocks per stage
    c.model.stem_stride = 2  # resnet: the stem halves H, W (64 px ROIs at the cost of 32 px)
    c.model.convs_per_stage = 2  # cnn: 3x3 convs per stage, the last one strided
    c.model.norm = "group"  # per-example: frozen outputs do not depend on the batch
    c.model.dropout = 0.1

    c.loss = ml_collections.ConfigDict()
    c.loss.class_weighting = "inverse_frequency"  # none | inverse_frequency
    c.loss.label_smoothing = 0.0

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 2e-3  # peak, after warm-up; cosine decay to 0 at train.steps
    c.optim.warmup_steps = 40
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 1e-4

    c.train = common.train(400, 32, log_every=50, eval_every=200)

    c.checkpoint = common.checkpoint(every=200, keep=2)
    return c
