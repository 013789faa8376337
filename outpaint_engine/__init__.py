"""Outpaint engine: SDXL differential-diffusion outpainting, and the job queue around it.

Importing this package (and its ``job``, ``plan``, ``api``, ``imageio`` and ``queue`` modules) needs
no torch, diffusers or OpenCV; the modules that run models import those themselves.
"""

__version__ = "0.1.0"
