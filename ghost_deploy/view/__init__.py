"""The report page: data gathered from report files (`collect`), rendered as one self-contained HTML file."""
