"""Training classes SAELens lacks, fitting SAELens's own ``SAETrainer``.

:mod:`.transcoder` holds :class:`~.transcoder.TranscoderTrainingSAE` (SAELens 6.54 ships
transcoder inference classes only) and :func:`~.transcoder.fit_transcoder`, which trains
one in-process. This package sits below the zoo, the dictionaries and the integrations
(it imports only torch and SAELens), so the zoo's build script, the SAELens integration
and every idea train transcoders with the same class. Importing it is cheap: the
submodule imports torch.
"""
