"""Reading the results store: statistical compare, the regression gate, the HTML report."""
