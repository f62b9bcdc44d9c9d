import sys

from rtchat.nodes.tts.node import main

sys.exit(main())
