"""Evaluation: FID/KID on pytorch-fid's Inception features, SIFID, generation, weights provisioning.

eval/fid.py                FID/KID library (`Evaluator`, `compute_features`, ...) and CLI
eval/metrics.py            Fréchet distance, KID, feature statistics (the math, float64)
eval/inception.py          pytorch-fid's InceptionV3 as a feature extractor on uint8 batches
eval/inception_weights.py  puts the Inception weights where pytorch-fid looks (no internet needed)
eval/generate.py           writes samples of a checkpoint as PNGs or one grid
eval/sifid.py              single-image FID (SinGAN); eval/psnr_ssim.py: reconstruction quality
"""
