import sys

from rtchat.nodes.agent.node import main

sys.exit(main())
