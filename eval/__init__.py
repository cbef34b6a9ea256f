"""Evaluation: FID/KID, precision/recall and memorization on pytorch-fid's Inception features, SIFID, generation.

eval/fid.py                FID/KID/precision/recall library (`Evaluator`, `compute_features`, ...) and CLI
eval/precision_recall.py   k-nearest-neighbour manifolds: precision, recall, nearest neighbours (float64)
eval/memorization.py       is the generator copying? nearest training images, copy rate, grids
eval/metrics.py            Fréchet distance, KID, feature statistics (the math, float64)
eval/inception.py          pytorch-fid's InceptionV3 as a feature extractor on uint8 batches
eval/inception_weights.py  puts the Inception weights where pytorch-fid looks (no internet needed)
eval/generate.py           writes samples of a checkpoint as PNGs or one grid
eval/sifid.py              single-image FID (SinGAN); eval/psnr_ssim.py: reconstruction quality
"""
