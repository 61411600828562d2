"""The model floor: generator and discriminator as populations of GANs, their activations, losses, optimizers and
the LightningModule that trains them. Imports torch and Lightning only: no Hydra, no config files, no run folders."""
