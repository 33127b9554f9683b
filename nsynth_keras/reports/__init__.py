"""What a run tells you: scores, confusion and the twin-aware generalisation report (evaluation), every
figure (plots), and the walkthrough's reading of learning curves and health checks (lessons)."""
