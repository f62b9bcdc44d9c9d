import sys

from rtchat.nodes.asr.node import main

sys.exit(main())
