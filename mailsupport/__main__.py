from mailsupport.cli import main

main()
