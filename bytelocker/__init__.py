"""ByteLocker: the open-source face-recognition door system.

The code is split by where it runs: ``edge`` (the door unit), ``central`` (the
collector and people registry), ``hardware`` (pins and cameras) and ``config``
(the YAML schema).  This package holds only what every part shares: the error
root, the MQTT contract and the ``bytelocker`` command line.
"""

__version__ = "0.1.0"
