"""Config files, one per model family. Each defines ``get_config(variant)`` for the ``cpu``, ``gpu`` and ``tpu``
variants; pass one as ``--config=launch/configs/<family>.py:<variant>`` and override keys with
``--config.key=value``."""
