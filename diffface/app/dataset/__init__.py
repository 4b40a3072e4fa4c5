"""Building a training dataset from fits (or synthetic faces, or annotated photos), its automatic quality flags,
previews and curation (in the browser or automatically)."""
