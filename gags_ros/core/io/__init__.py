"""Files in and out of the core: posed-image datasets (:mod:`.datasets`: nerfstudio / instant-ngp,
Blender, COLMAP; the writer of the project's format), versioned map files (:mod:`.mapfile`), the
standard 3DGS PLY (:mod:`.ply`), the semantic PLY export (:mod:`.export`) and ROS 2 bags through
`rosbags` (:mod:`.bags`).

Nothing is re-exported here: each module is imported where it is used (torch-free callers of
:mod:`.datasets` stay light).
"""
