"""A world at run time: `load_world(config)` -> `World`.

`load` builds the World of any config.world and tells what can be known
of a world before loading it; `world` is the World type; `assets` locates
the shipped reference-world weights; `judges` is the style judge;
`magenta_rt` loads the real Magenta RT assets.
"""

from mrt_distill.world.runtime.load import load_world
from mrt_distill.world.runtime.load import teacher_identity
from mrt_distill.world.runtime.world import World

__all__ = ["World", "load_world", "teacher_identity"]
