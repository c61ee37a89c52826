"""The two-way sync with Label Studio: push queue items as tasks, pull annotations as labels.

``config`` builds the labelling config from the class list, ``convert`` turns
Label Studio results into class names and pixel boxes, ``signing`` makes the
expiring image URLs Label Studio loads, ``client`` is the only module that
talks to the server (through label-studio-sdk), and ``sync`` holds the push,
the pull and the release of held items.
"""
