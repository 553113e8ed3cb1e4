"""The transcoder-clustering idea: do co-activation clusters of transcoder latents find circuits?"""

from .idea import TranscoderClustering

IDEAS: list = [TranscoderClustering]
