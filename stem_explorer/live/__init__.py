"""Live acquisition: explore a scan while the detector records it.

* :func:`merlin` receives a Quantum Detectors Merlin acquisition over TCP and returns
  a :class:`~stem_explorer.io.live.LiveDataSet`; ``Session(live).run(...)`` streams
  results as frames arrive and a job started mid-scan covers the frames recorded so
  far first.
* :class:`MerlinSimulator` (``stem-explorer simulate merlin FILE.mib``) serves a
  ``.mib`` file as a Merlin would, for tests, demos and users without a detector.
* :func:`watch` follows the files a detector's own software is still writing in a
  folder: Merlin ``.mib`` files (growing files, and the next files of a series) and
  DECTRIS ARINA acquisitions (a master and data files, each data file once complete).
"""

from ..io.live import LiveDataSet, LiveStats
from ..io.partitioned.recording import recover_recording
from .merlin import MerlinReceiver, merlin
from .simulator import MerlinSimulator, SimulatorProcess
from .watch import watch

__all__ = ["LiveDataSet", "LiveStats", "MerlinReceiver", "MerlinSimulator", "SimulatorProcess", "merlin", "recover_recording",
           "watch"]
