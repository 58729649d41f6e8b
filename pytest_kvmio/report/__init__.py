"""Reports: the verdict record, the JSON summary, waivers, the gate, the terminal and Allure."""
