"""The properties of each exercise, one module per exercise; ``gdn2.course.exercises`` lists them in order."""
