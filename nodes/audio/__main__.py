import sys

from rtchat.nodes.audio.node import main

sys.exit(main())
