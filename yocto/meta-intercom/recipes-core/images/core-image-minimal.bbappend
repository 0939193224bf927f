# Example: turn core-image-minimal into a door station image for the board
# of config/boards/raspberrypi4-64.toml. For another board, copy this file
# into your own layer and change the MACHINE override (and INTERCOMD_BOARD,
# see README.md).
IMAGE_INSTALL:append:raspberrypi4-64 = " packagegroup-intercom"
